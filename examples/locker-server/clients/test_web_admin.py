"""The operator's page (/admin) in headless Debian Chromium, against the real server and store.

Alice and bob hold the same MP3s (retagged copies of one recording) in a per-user-copy store,
and a deleted track leaves garbage. Through the page an operator signs in, reads the figures
(compared with `lockerstore stats --json` on the stopped store), reads the charts (bar sizes
against the figures), migrates to single-master (physical bytes land where the what-if said),
runs GC (garbage to 0), edits a quota, adds a user and revokes a key. Tracks of three rights
holders (named through the upload API's rightsHolder) fill the section "Licences by rights
holder": its SVG chart has one bar per holder (a saving to the right, a cost to the left, each
labelled), its table the licence each holder has; a licence set through the form shows at once,
a bad one is refused with the reason, and after the migration every holder's audit conforms. Users' keys and cookies
get 401, the cookie without the CSRF header gets 403, and the page raises no console error and
no CSP violation. Screenshots at 1280x800 and 375x667.

web_admin.mjs drives the browser; this script talks to it one JSON line at a time, so the server
can be stopped and restarted between steps while the browser lives on.
Env: LOCKER_SERVER, FIXTURES, WORK (run.sh); LOCKER_WEB_DIR (serve the pages from that directory
with --web-dir); LOCKERSTORE (the CLI; built with cargo when unset); SCREENSHOTS (where to put
them; <repo>/target/screenshots by default).
"""

import json
import os
import time
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import harness

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
SHOTS = os.environ.get("SCREENSHOTS") or os.path.join(ROOT, "target", "screenshots")
# The figures every overview must show (the names of `lockerstore stats --json`).
FIGURES = ["mode", "users", "tracks", "logical_bytes", "physical_bytes", "garbage_bytes", "dedup_ratio",
           "packs", "pack_bytes", "chunks", "recordings"]

failures = []


def check(ok, what):
    if not ok:
        failures.append(what)
        print("  FAILED:", what)
    return ok


def lockerstore():
    if os.environ.get("LOCKERSTORE"):
        return os.environ["LOCKERSTORE"]
    subprocess.run(["cargo", "build", "--release", "--bin", "lockerstore", "--features", "cli"], cwd=ROOT, check=True)
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    return os.path.join(target, "release", "lockerstore")


def cli_stats(store):
    out = subprocess.run([lockerstore(), "--store", store, "stats", "--json"], check=True, capture_output=True)
    return json.loads(out.stdout)


def call(base, method, path, token=None, body=None):
    """One HTTP call; returns (status, JSON or None). Bearer needs no CSRF token."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, None


def fmt_bytes(n):
    """The page's fmtBytes (admin.js): decimal units."""
    if abs(n) < 1e3:
        return f"{n} B"
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.{0 if abs(n) >= 100 * size else 1}f} {unit}"


class Browser:
    """web_admin.mjs: one command in, one answer out."""

    def __init__(self, base):
        self.proc = subprocess.Popen(
            ["node", os.path.join(HERE, "web_admin.mjs"), base],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(os.path.join(harness.WORK, "node.log"), "wb"),
            text=True, cwd=HERE,
        )

    def __call__(self, cmd, **args):
        self.proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            with open(os.path.join(harness.WORK, "node.log")) as f:
                raise RuntimeError(f"the browser driver died during {cmd}: {f.read()}")
        answer = json.loads(line)
        if not answer.pop("ok"):
            raise RuntimeError(answer["error"])
        return answer

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.write('{"cmd": "close"}\n')
            self.proc.stdin.flush()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def compare_with_cli(page_stats, cli, when):
    """Every figure the page shows equals the CLI's on the stopped store."""
    for key in FIGURES:
        check(key in page_stats, f"{when}: the page shows no data-stat={key}")
    for key, shown in page_stats.items():
        if key not in cli:
            check(False, f"{when}: data-stat={key} is not a field of `lockerstore stats --json`")
        elif key == "mode":
            check(shown == cli[key], f"{when}: mode {shown!r} on the page, {cli[key]!r} from the CLI")
        elif key == "dedup_ratio":
            check(abs(float(shown) - cli[key]) <= 1e-9, f"{when}: dedup_ratio {shown} on the page, {cli[key]} from the CLI")
        else:
            check(shown is not None and re.fullmatch(r"\d+", shown) and int(shown) == cli[key],
                  f"{when}: {key} {shown} on the page, {cli[key]} from the CLI")


def check_bars(chart, expect, name):
    """The chart's bars hold the figures, and each bar's width is its value on the chart's scale."""
    check(chart["role"] == "img", f"{name}: role={chart['role']}, not img")
    check(bool(chart["label"]) and bool(chart["title"]), f"{name}: no aria-label or <title>")
    bars = {b["key"]: b for b in chart["bars"]}
    check(set(bars) == set(expect), f"{name}: bars {sorted(bars)}, expected {sorted(expect)}")
    scale, plot = chart["scale_max"], chart["plot_width"]
    check(scale is not None and scale >= max([0, *expect.values()]), f"{name}: scale {scale} below the largest figure")
    for key, value in expect.items():
        bar = bars.get(key)
        if bar is None:
            continue
        check(int(bar["value"]) == value, f"{name}: bar {key} holds {bar['value']}, the figure is {value}")
        want = max(0, value) / scale * plot
        check(abs(bar["width"] - want) < 0.01, f"{name}: bar {key} is {bar['width']:.2f} wide, {want:.2f} expected")
        check(fmt_bytes(value) in chart["label"], f"{name}: the label {chart['label']!r} does not state {key} ({fmt_bytes(value)})")
    # Longer figure, longer bar (what the eye reads).
    for a in expect:
        for b in expect:
            if a in bars and b in bars and expect[a] > max(0, expect[b]):
                check(bars[a]["width"] > bars[b]["width"], f"{name}: {a} ({expect[a]}) is not drawn longer than {b} ({expect[b]})")
    check(chart["rendered_width"] > 100, f"{name}: drawn {chart['rendered_width']} px wide")


def check_charts(snap, stats_api):
    s = {k: int(v) for k, v in snap["stats"].items() if k not in ("mode", "dedup_ratio")}
    charts = snap["charts"]
    check_bars(charts["bytes"], {k: s[k] for k in ("logical_bytes", "physical_bytes", "garbage_bytes")}, "bytes chart")
    check_bars(charts["savings"], {
        "physical_now": s["physical_bytes"],
        "physical_other": int(snap["whatif"]["physical_bytes"]),
        "dedup_saves": s["logical_bytes"] - s["physical_bytes"],
    }, "savings chart")
    users = charts["users"]
    segments = {b["key"]: b for b in users["bars"]}
    expect = {u["user"]: u["logical_bytes"] for u in stats_api["per_user"]}
    check({k: int(b["value"]) for k, b in segments.items()} == expect, f"users chart: {segments} vs {expect}")
    total = sum(expect.values())
    for user, value in expect.items():
        if user in segments and total:
            want = value / total * users["plot_width"]
            check(abs(segments[user]["width"] - want) < 0.01, f"users chart: {user} is {segments[user]['width']} wide, {want} expected")
    check(users["role"] == "img" and all(u in (users["label"] or "") for u in expect), f"users chart label {users['label']!r}")


def check_holders(h, api, when):
    """The section "Licences by rights holder" against GET /api/v1/admin/holders."""
    chart = h["chart"]
    check(chart["role"] == "img" and bool(chart["label"]) and bool(chart["title"]), f"{when}: holders chart has no role/aria-label/<title>: {chart}")
    expect = {x["holder"]: x["savings"] for x in api["holders"]}
    bars = {b["holder"]: b for b in chart["bars"]}
    check(len(chart["bars"]) == len(expect) and set(bars) == set(expect), f"{when}: bars {sorted(bars)}, holders {sorted(expect)}")
    labels = {t["holder"]: t["text"] for t in chart["labels"]}
    scale, plot, zero = chart["scale_max"], chart["plot_width"], chart["zero_x"]
    for name, savings in expect.items():
        bar = bars.get(name)
        if bar is None:
            continue
        check(bar["value"] == savings, f"{when}: {name}'s bar holds {bar['value']}, the what-if says {savings}")
        check(labels.get(name) == name, f"{when}: {name}'s bar is labelled {labels.get(name)!r}")
        check(name in chart["label"] and fmt_bytes(abs(savings)) in chart["label"], f"{when}: the chart's label does not state {name}: {chart['label']!r}")
        want = abs(savings) / scale * plot
        check(abs(bar["width"] - want) < 0.01, f"{when}: {name}'s bar is {bar['width']:.2f} wide, {want:.2f} expected")
        if savings < 0:
            check(abs(bar["x"] + bar["width"] - zero) < 0.01 and "bar-cost" in bar["cls"], f"{when}: {name}'s cost is not drawn leftwards from the zero line: {bar} zero {zero}")
        else:
            check(abs(bar["x"] - zero) < 0.01 and "bar-saved" in bar["cls"], f"{when}: {name}'s saving is not drawn rightwards from the zero line: {bar} zero {zero}")
        value = next((v["text"] for v in chart["values"] if v["holder"] == name), "")
        check(fmt_bytes(abs(savings)) in value and (("cost" in value) == (savings < 0)), f"{when}: {name}'s bar says {value!r}")
    check(chart["rendered_width"] > 100, f"{when}: the holders chart is drawn {chart['rendered_width']} px wide")
    # The table carries the same numbers and every holder's licence.
    rows = {r["holder"]: r for r in h["rows"] if r["holder"]}
    words = {"single-master": "shared", "per-user-copy": "per-user"}
    entries = {e["holder"]: e for e in api["licences"]["entries"]}
    for x in api["holders"]:
        row = rows.get(x["holder"])
        if not check(row is not None, f"{when}: no table row for {x['holder']}"):
            continue
        check(row["savings"] == x["savings"] and row["tracks"] == str(x["tracks"]), f"{when}: {x['holder']}'s row {row} vs {x}")
        lic = x["licence"]
        want = "default" if lic is None or lic["expired"] else words[lic["mode"]]
        check(row["licence"] == want, f"{when}: {x['holder']}'s licence shows {row['licence']!r}, expected {want!r}")
        check(row["conforming"] == ("true" if x["audit"]["conforming"] else "false"), f"{when}: {x['holder']}'s verdict {row['verdict']!r} vs {x['audit']}")
    for name, e in entries.items():
        check(name in rows and rows[name]["licence"] == words[e["mode"]] and rows[name]["until"] == e["until"],
              f"{when}: the licence of {name} ({e}) is not in the table: {rows.get(name)}")
    unassigned = [r for r in h["rows"] if r["unassigned"]]
    check(len(unassigned) == (1 if api["unassigned_tracks"] else 0) and (not unassigned or unassigned[0]["tracks"] == str(api["unassigned_tracks"])),
          f"{when}: unassigned row {unassigned} vs {api['unassigned_tracks']} tracks")
    return rows


def main():
    store = os.path.join(harness.WORK, "store")
    web_dir = os.environ.get("LOCKER_WEB_DIR")
    web = ["--web-dir", web_dir] if web_dir else []
    missing_style = bool(web_dir) and not os.path.exists(os.path.join(web_dir, "style.css"))
    made = subprocess.run([harness.BIN, "--store", store, "--mode", "per-user-copy", "user", "add", "alice", "--json"],
                          check=True, capture_output=True)
    alice = json.loads(made.stdout)
    bob = harness.add_user(store, "bob")
    op = subprocess.run([harness.BIN, "--store", store, "operator", "add", "root", "--json"], check=True, capture_output=True)
    root = json.loads(op.stdout)["operator_key"]
    port = harness.free_port()
    os.makedirs(SHOTS, exist_ok=True)

    server = harness.Server(store, *web, port=port)
    base = server.base
    # The same retagged copies of one recording in both lockers: single-master would keep one.
    mp3s = [(n, d) for n, d in harness.fixtures() if n.startswith("mp3-cbr-")]
    for name, data in mp3s:
        for who in (alice, bob):
            harness.upload(base, who["api_key"], f"Fixtures/{name}", data)
    # Tracks whose rights holders the uploads name: EMI's recording in both lockers (tagged
    # apart), Sony Music's in both, Warner's release of that one in bob's only. Small files, so
    # the pack's live share after the migration stays under GC's threshold (GC to 0 below).
    fx = dict(harness.fixtures())
    harness.upload(base, alice["api_key"], "Labels/emi.ogg", fx["ogg-vorbis-tags-vorbiscomment.ogg"], rights_holder="EMI")
    harness.upload(base, bob["api_key"], "Labels/emi.ogg", fx["ogg-vorbis-untagged-oggenc.ogg"], rights_holder="EMI")
    for who in (alice, bob):
        harness.upload(base, who["api_key"], "Labels/sony.opus", fx["opus-opusenc.opus"], rights_holder="Sony Music")
    harness.upload(base, bob["api_key"], "Labels/warner.opus", fx["opus-tags-mutagen.opus"], rights_holder="Warner")
    # Sony Music is licensed (until a day 30 days ahead): flipping it back would cost.
    sony_until = (int(time.time()) // 86400 + 31) * 86400
    status, _ = call(base, "PUT", "/api/v1/admin/licences", root, {"holder": "Sony Music", "mode": "shared", "until": sony_until})
    assert status == 200, f"PUT licences: {status}"
    # A track of its own, deleted: its chunks become garbage.
    scratch = dict(harness.fixtures())["flac-plain-flac.flac"]
    harness.upload(base, alice["api_key"], "Scratch/plain.flac", scratch)
    status, _ = call(base, "DELETE", "/api/v1/tracks/Scratch/plain.flac", alice["api_key"])
    assert status == 204, f"DELETE track: {status}"
    _, stats0 = call(base, "GET", "/api/v1/admin/stats", root)
    _, whatif0 = call(base, "GET", "/api/v1/admin/what-if", root)
    print("store:", {k: stats0[k] for k in FIGURES}, "what-if:", whatif0["other"]["physical_bytes"])
    assert stats0["mode"] == "per-user-copy" and stats0["garbage_bytes"] > 0, stats0
    assert whatif0["other"]["physical_bytes"] < stats0["physical_bytes"], "single-master would not save space"

    browser = Browser(base)
    try:
        # -- 2. sign-in: only an operator key opens the page
        page = browser("goto", path="/admin")
        check(page["status"] == 200 and page["view"] == "signin", f"/admin without a session: {page}")
        csp = page["csp"] or ""
        for directive in ("default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"):
            check(directive in csp, f"CSP on /admin lacks {directive!r}: {csp!r}")
        probe = browser("user_cookie_probe", api_key=alice["api_key"])
        check(probe["session"] == 200 and probe["stats"] == 401, f"a user's cookie on /api/v1/admin/stats: {probe}")
        check(probe["jobs"] in (401, 403), f"a user's cookie starting a job: {probe}")
        check(call(base, "GET", "/api/v1/admin/stats", alice["api_key"])[0] == 401, "a user's API key as Bearer on /api/v1/admin/stats")
        wrong = browser("signin", key=alice["api_key"])
        check(wrong["status"] == 401 and wrong["view"] == "signin" and wrong["error"], f"signing in with a user's key: {wrong}")
        signed = browser("signin", key=root)
        check(signed["status"] == 200 and signed["view"] == "app" and signed["who"] == "root", f"signing in with the operator key: {signed}")

        def restart_and_compare(snap, when):
            nonlocal server
            browser("park")
            server.stop()
            compare_with_cli(snap["stats"], cli_stats(store), when)
            server = harness.Server(store, *web, port=port)
            again = browser("goto", path="/admin")
            print(f"  after the restart the page shows the {again['view']} (operator session {'kept' if again['view'] == 'app' else 'gone'})")
            if again["view"] == "signin":
                check(browser("signin", key=root)["view"] == "app", f"{when}: signing in again after the restart")
            return browser("read")

        # -- 3, 4. figures against the CLI, charts against the figures
        snap = browser("read")
        check_charts(snap, stats0)
        check(re.fullmatch(r"\d+\.\d{3}×", snap["stats_text"]["dedup_ratio"]) is not None, f"dedup ratio shown as {snap['stats_text']['dedup_ratio']!r}")
        check("MB" in snap["stats_text"]["logical_bytes"] or "kB" in snap["stats_text"]["logical_bytes"], f"logical bytes shown as {snap['stats_text']['logical_bytes']!r}")
        predicted = int(snap["whatif"]["physical_bytes"])
        check(predicted == whatif0["other"]["physical_bytes"], f"what-if on the page {predicted}, API {whatif0['other']['physical_bytes']}")

        # -- 4b. licences by rights holder: chart and table against the API
        h = browser("holders")
        _, api = call(base, "GET", "/api/v1/admin/holders", root)
        print("  holders:", [(x["holder"], x["savings"], x["licence"] and x["licence"]["mode"]) for x in api["holders"]])
        check({x["holder"] for x in api["holders"]} == {"EMI", "Sony Music", "Warner"}, f"holders: {api['holders']}")
        savings = {x["holder"]: x["savings"] for x in api["holders"]}
        check(savings.get("EMI", 0) > 0 and savings.get("Sony Music", 0) < 0, f"EMI should save, Sony Music cost: {savings}")
        rows = check_holders(h, api, "holders, per-user-copy")
        check(rows.get("Sony Music", {}).get("until") == sony_until, f"Sony Music's end: {rows.get('Sony Music')}")
        check(rows.get("Sony Music", {}).get("conforming") == "false", f"Sony Music's tracks wait for a migration: {rows.get('Sony Music')}")
        # A licence through the form: EMI signs.
        set_emi = browser("set_licence", holder="EMI", mode="single-master", until=None)
        check(set_emi["status"] == 200 and set_emi["method"] == "PUT" and set_emi["csrf_sent"], f"setting EMI's licence: {set_emi}")
        h = browser("holders", after=h["loaded"])
        _, api = call(base, "GET", "/api/v1/admin/holders", root)
        entries = {e["holder"]: e for e in api["licences"]["entries"]}
        check(entries.get("EMI", {}).get("mode") == "single-master" and entries["EMI"]["until"] is None, f"EMI's licence after the form: {entries}")
        rows = check_holders(h, api, "holders after EMI signed")
        check(rows.get("EMI", {}).get("licence") == "shared", f"EMI's row after the form: {rows.get('EMI')}")
        # A licence that ended before it began is refused with the reason, and nothing changes.
        bad = browser("set_licence", holder="Warner", mode="single-master", until="2001-01-01")
        check(bad["status"] == 400 and "passed" in bad["error"], f"a licence ending in 2001: {bad}")
        _, api2 = call(base, "GET", "/api/v1/admin/licences", root)
        check(api2 == api["licences"], f"a refused licence changed the policy: {api2}")
        browser("screenshot_element", selector="#holders-section", path=os.path.join(SHOTS, "admin-holders.png"))
        snap = restart_and_compare(snap, "per-user-copy")

        # -- 5. migrate through the UI, then GC
        mig = browser("job", kind="migrate")
        print("  migrate:", mig["state"], mig["status"], "seen", len(mig["seen"]), "changes; dialog:", mig["dialog"]["body"].replace("\n", " | "))
        check(mig["state"] == "done", f"migration job ended {mig['state']}: {mig['status']} {mig['error']}")
        check("single-master" in mig["dialog"]["title"] and fmt_bytes(predicted) in mig["dialog"]["body"],
              f"the confirm does not show the what-if ({fmt_bytes(predicted)}): {mig['dialog']}")
        check(any(s["visible"] and s["progress"] is not None for s in mig["seen"]), f"no progress shown: {mig['seen']}")
        check(any(s["state"] == "running" for s in mig["seen"]), f"the job was never shown running: {mig['seen']}")
        final = mig["seen"][-1]["progress"] if mig["seen"] else None
        check(final is not None and final[0] == final[1], f"progress at the end: {final}")
        check(mig["live"] == "polite", "the job status is not aria-live")
        after = mig["snapshot"]["stats"]
        check(after["mode"] == "single-master", f"mode after the migration: {after['mode']}")
        physical = int(after["physical_bytes"])
        check(abs(physical - predicted) <= 0.01 * predicted, f"physical bytes after the migration {physical}, the what-if said {predicted}")
        check(int(after["physical_bytes"]) < int(snap["stats"]["physical_bytes"]), "physical bytes did not drop")
        check(bool(mig["snapshot"]["jobs"]) and mig["snapshot"]["jobs"][0]["state"] == "done", f"recent jobs: {mig['snapshot']['jobs']}")
        _, stats_now = call(base, "GET", "/api/v1/admin/stats", root)
        check_charts(mig["snapshot"], stats_now)
        h = browser("holders")
        _, api = call(base, "GET", "/api/v1/admin/holders", root)
        check_holders(h, api, "holders after the migration")
        check(api["conforming"] and all(r["conforming"] == "true" for r in h["rows"] if r["conforming"]), f"after the migration every holder conforms: {h['rows']}")
        shot = browser("screenshot", path=os.path.join(SHOTS, "admin.png"), width=1280, height=800)
        check(shot["overflow"] <= 0, f"1280x800: the page is {shot['overflow']} px wider than the window")

        gc = browser("job", kind="gc")
        print("  gc:", gc["state"], gc["status"], "report:", gc["report"])
        check(gc["state"] == "done", f"GC job ended {gc['state']}: {gc['status']} {gc['error']}")
        check(gc["snapshot"]["stats"]["garbage_bytes"] == "0", f"garbage after GC: {gc['snapshot']['stats']['garbage_bytes']}")
        check(bool(gc["report"]), "the GC job's report is not shown")
        check([j["state"] for j in gc["snapshot"]["jobs"][:2]] == ["done", "done"], f"recent jobs: {gc['snapshot']['jobs']}")
        _, stats_now = call(base, "GET", "/api/v1/admin/stats", root)
        check_charts(gc["snapshot"], stats_now)
        restart_and_compare(gc["snapshot"], "single-master after GC")

        # -- 6. users: quota, add, revoke
        q = browser("quota", user="bob", mb=50, tracks=30)
        check(q["status"] == 200 and q["csrf_sent"], f"quota PUT: {q}")
        _, users = call(base, "GET", "/api/v1/admin/users", root)
        b = next(u for u in users if u["user"] == "bob")
        check(b["max_bytes"] == 50_000_000 and b["max_tracks"] == 30, f"bob after the quota edit: {b}")
        check("50.0 MB" in q["row"], f"bob's row does not show the quota: {q['row']!r}")
        q = browser("quota", user="bob", mb=None, tracks=30)
        _, users = call(base, "GET", "/api/v1/admin/users", root)
        b = next(u for u in users if u["user"] == "bob")
        check(b["max_bytes"] is None and b["max_tracks"] == 30, f"bob after lifting the byte limit: {b}")

        added = browser("add_user", name="carol", mb=10, tracks=5)
        key = added["issued"]["api_key"]
        check(added["status"] == 201 and added["issued"]["user"] == "carol" and key and added["issued"]["subsonic_password"], f"adding carol: {added}")
        check(added["after_done"] == "", "the key stays in the page after Done")
        status, me = call(base, "GET", "/api/v1/me", key)
        check(status == 200 and me["max_bytes"] == 10_000_000 and me["max_tracks"] == 5, f"carol's key on /api/v1/me: {status} {me}")
        revoked = browser("revoke", name="carol")
        check(revoked["status"] == 200 and revoked["issued"]["api_key"] not in ("", key), f"revoking carol's key: {revoked}")
        check(call(base, "GET", "/api/v1/me", key)[0] == 401, "carol's old key still works")
        check(call(base, "GET", "/api/v1/me", revoked["issued"]["api_key"])[0] == 200, "carol's new key does not work")

        # -- 7. CSRF, keyboard, phone, sign-out
        _, jobs_before = call(base, "GET", "/api/v1/admin/jobs", root)
        forged = browser("csrf_probe")
        check(forged["status"] == 403, f"POST /api/v1/admin/jobs with the cookie and no X-CSRF-Token: {forged}")
        _, jobs_after = call(base, "GET", "/api/v1/admin/jobs", root)
        check(len(jobs_after) == len(jobs_before), "a job started without the CSRF token")
        keys = browser("keyboard", presses=6)["order"]
        print("  tab order:", [k["id"] or k["text"] for k in keys])
        check(all(k["tag"] in ("button", "input", "a", "select", "textarea") for k in keys), f"tab reaches non-controls: {keys}")
        check(all(k["ring"] for k in keys), f"a focused control shows no ring: {keys}")
        check(any(k["id"] == "run-gc" for k in keys) or any(k["id"] == "refresh" for k in keys), f"tab order: {keys}")
        phone = browser("screenshot", path=os.path.join(SHOTS, "admin-phone.png"), width=375, height=667)
        check(phone["overflow"] <= 0, f"375x667: the page is {phone['overflow']} px wider than the screen")
        check(0 < phone["chart_width"] <= 375, f"375x667: the chart is {phone['chart_width']} px wide")
        # A session that ends under the page (the operator's keys revoked through the running
        # server's admin socket): the next call's 401 brings the form back.
        op = subprocess.run([harness.BIN, "--store", store, "operator", "revoke-key", "root", "--json"], check=True, capture_output=True)
        root = json.loads(op.stdout)["operator_key"]
        ended = browser("refresh_expect_signin")
        check(ended["view"] == "signin" and ended["app_hidden"] and ended["message"], f"a 401 under the page: {ended}")
        check(browser("signin", key=root)["view"] == "app", "signing in with the new operator key")
        out = browser("signout")
        check(out["view"] == "signin" and out["session"] == 401 and out["app_hidden"], f"signing out: {out}")

        # -- the page's own errors
        seen = browser("errors")
        if missing_style:
            # Pages served from a web dir without the player's shared sheet: its 404 is the
            # checkout's, not the page's (admin.css carries the whole look).
            print("  note: no style.css in LOCKER_WEB_DIR: its 404 and refused stylesheet are not counted")
            for kind in ("console", "page_errors"):
                seen[kind] = [e for e in seen[kind] if "/static/style.css" not in e]
        check(not seen["console"], f"console errors: {seen['console']}")
        check(not seen["page_errors"], f"page errors: {seen['page_errors']}")
        check(not seen["csp"], f"CSP violations: {seen['csp']}")
        expected = {("GET", "/api/v1/admin/session", 401), ("POST", "/api/v1/admin/session", 401),
                    ("POST", "/api/v1/admin/jobs", 401), ("POST", "/api/v1/admin/jobs", 403),
                    ("PUT", "/api/v1/admin/licences", 400),
                    *(("GET", f"/api/v1/admin/{p}", 401) for p in ("stats", "what-if", "users", "jobs", "holders"))}
        for r in seen["responses"]:
            path = urllib.parse.urlsplit(r["url"]).path
            if (r["method"], path, r["status"]) in expected:
                continue
            if path == "/static/style.css" and r["status"] == 404 and missing_style:
                continue
            check(False, f"unexpected answer {r['status']} to {r['method']} {path}")
    finally:
        browser.close()
        if server.proc.poll() is None:
            server.stop()

    if failures:
        print("FAIL: web admin:", *failures, sep="\n  ")
        sys.exit(1)
    print(f"PASS: web admin: sign-in, figures = lockerstore stats (twice), charts, licences by rights holder, migrate, GC, quota, users, CSRF, CSP; screenshots in {SHOTS}")


main()
