"""Real encoded music long enough to seek in: 60 s of tones in MP3, FLAC, AAC/MP4 and Vorbis,
encoded by ffmpeg (the fixtures are only 3-4 s long). Cached in WORK."""

import os
import subprocess

from harness import WORK

# (file name, ffmpeg codec arguments, content type the server must give)
FORMATS = [
    ("long.mp3", ["-c:a", "libmp3lame", "-b:a", "128k"], "audio/mpeg"),
    ("long.flac", ["-c:a", "flac"], "audio/flac"),
    ("long.m4a", ["-c:a", "aac", "-b:a", "128k", "-movflags", "+faststart"], "audio/mp4"),
    ("long.ogg", ["-c:a", "libvorbis", "-q:a", "3"], "audio/ogg"),
]


def long_tracks(seconds=60):
    """[(name, path, content type)] of freshly encoded files, with tags."""
    out = []
    for name, codec, ctype in FORMATS:
        path = os.path.join(WORK, name)
        if not os.path.exists(path):
            subprocess.run(
                [
                    "ffmpeg", "-v", "error", "-y",
                    "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
                    "-f", "lavfi", "-i", f"sine=frequency=660:duration={seconds}",
                    "-filter_complex", "amerge=inputs=2",
                    *codec,
                    "-metadata", "title=Long Tone",
                    "-metadata", "artist=Test Signal",
                    "-metadata", "album=Seeking",
                    path,
                ],
                check=True,
            )
        out.append((name, path, ctype))
    return out
