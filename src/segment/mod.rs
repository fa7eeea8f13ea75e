//! Format-aware segmentation of uploads (tag regions apart from the audio payload).
