"""The desktop app end to end, as a user sees it: under Xvfb with a tray host
(trayer) and a D-Bus notification daemon (dunst, D-Bus-activated), driven
through tauri-driver + WebKitWebDriver, against a real backend (auth,
gateway, converter from this build, RabbitMQ, MongoDB-compatible server).

Run by scripts/test-gui inside `xvfb-run ... dbus-run-session`. Screenshots
go to $GUI_ARTIFACTS. Exits non-zero on the first failed check.
"""
import email as mail_parser
import email.policy
import json
import os
import sys
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.common.options import ArgOptions

BIN = Path(os.environ["GUI_BIN_DIR"])
APP = Path(os.environ["GUI_APP"])
ARTIFACTS = Path(os.environ["GUI_ARTIFACTS"])
WORK = Path(tempfile.mkdtemp(prefix="mp3c-gui-"))
PROCS = []


def log(text):
    print(f"[gui] {text}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(name, args, env=None, **kwargs):
    out = open(WORK / f"{name}.log", "wb")
    proc = subprocess.Popen(args, env={**os.environ, **(env or {})}, stdout=out,
                            stderr=subprocess.STDOUT, **kwargs)
    PROCS.append(proc)
    return proc


def wait_port(port, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise SystemExit(f"port {port} never opened")


def wait_until(what, check, seconds=90, every=0.25):
    deadline = time.time() + seconds
    last = None
    while time.time() < deadline:
        try:
            last = check()
            if last:
                return last
        except WebDriverException as err:
            last = err
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def http(method, url, body=None):
    return api_call(method, url, body)[0]


def api_call(method, url, body=None, token=None):
    """(status, JSON body or None), errors included."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, text = response.status, response.read()
    except urllib.error.HTTPError as err:
        status, text = err.code, err.read()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, None


def mails_to(mail_api, address):
    """The messages the SMTP catcher holds for `address`, newest first."""
    with urllib.request.urlopen(f"{mail_api}/api/v1/messages?limit=200", timeout=10) as response:
        messages = json.load(response)["messages"]
    return [m for m in messages if address in json.dumps(m["To"])]


def link_token(mail_api, message_id):
    """The token of the link in a mailed message."""
    with urllib.request.urlopen(f"{mail_api}/api/v1/message/{message_id}/raw", timeout=10) as response:
        message = mail_parser.message_from_bytes(response.read(), policy=email.policy.default)
    text = message.get_body(("plain",)).get_content()
    found = re.search(r"token=([A-Za-z0-9_-]+)", text)
    assert found, text
    return found.group(1)


def make_video(path, seconds, freq):
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
         f"testsrc=size=320x240:rate=25:duration={seconds}", "-f", "lavfi", "-i",
         f"sine=frequency={freq}:sample_rate=44100:duration={seconds}",
         "-c:v", "mpeg4", "-q:v", "2", "-c:a", "aac", "-shortest", str(path)],
        check=True)


PREFIX = "g" + uuid.uuid4().hex[:10]


def start_backend():
    prefix = PREFIX
    auth_port, gateway_port = free_port(), free_port()
    # A real SMTP server for auth's confirmation links (scripts/up's catcher).
    smtp_port, mail_api_port = free_port(), free_port()
    catcher = Path(__file__).resolve().parents[3] / "scripts" / "smtp-catcher.py"
    spawn("smtp-catcher", [sys.executable, catcher, "127.0.0.1", str(smtp_port), str(WORK / "mail"),
                           "--api", str(mail_api_port)])
    wait_port(smtp_port)
    wait_port(mail_api_port)
    mail_api = f"http://127.0.0.1:{mail_api_port}"
    common = {
        "AMQP_URL": os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
        "MONGODB_URI": os.environ.get("MONGODB_URI", "mongodb://127.0.0.1:27017"),
        "VIDEO_QUEUE": f"{prefix}.video", "MP3_QUEUE": f"{prefix}.mp3",
        "EVENTS_EXCHANGE": f"{prefix}.events",
        "VIDEOS_DB": f"{prefix}_videos", "MP3S_DB": f"{prefix}_mp3s",
        "RUST_LOG": "info",
    }
    spawn("auth", [BIN / "auth-service"], {
        "LISTEN_ADDR": f"127.0.0.1:{auth_port}",
        "DATABASE_URL": f"sqlite://{WORK}/auth.db?mode=rwc",
        "JWT_SECRET": "gui-test-secret-that-is-long-enough-for-hs256",
        "SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
        "PUBLIC_URL": f"http://127.0.0.1:{gateway_port}",
    })
    wait_port(auth_port)
    spawn("gateway", [BIN / "gateway"], {**common, "LISTEN_ADDR": f"127.0.0.1:{gateway_port}",
                                         "OPS_LISTEN_ADDR": f"127.0.0.1:{free_port()}",
                                         "AUTH_URL": f"http://127.0.0.1:{auth_port}",
                                         "SSE_KEEP_ALIVE_MS": "2000"})
    spawn("converter", [BIN / "converter"], {**common, "LISTEN_ADDR": f"127.0.0.1:{free_port()}"})
    wait_port(gateway_port)
    server = f"http://127.0.0.1:{gateway_port}"
    email, password = f"{prefix}@example.com", "gui-test-password"
    assert http("POST", f"{server}/api/v1/register", {"email": email, "password": password}) == 201
    return server, email, password, mail_api, time.time()


def screenshot(driver, name):
    """The window through WebDriver and the whole screen (tray included)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))
    subprocess.run(["import", "-window", "root", str(ARTIFACTS / f"{name}-screen.png")],
                   check=False, env={**os.environ})
    log(f"screenshot {name}")


def window_geometry(name):
    out = subprocess.run(["xdotool", "search", "--name", f"^{name}$", "getwindowgeometry", "--shell"],
                         capture_output=True, text=True, check=True).stdout
    values = dict(line.split("=", 1) for line in out.split() if "=" in line)
    return int(values["X"]), int(values["Y"]), int(values["WIDTH"]), int(values["HEIGHT"])


def tray_dots():
    """Pixels of the tray icon's state dot: (working blue, error red).
    trayer docks the icon in the top right corner."""
    width = int(subprocess.run(["xdotool", "getdisplaygeometry"], capture_output=True,
                               text=True, check=True).stdout.split()[0])
    out = subprocess.run(["import", "-window", "root", "-crop", f"64x32+{width - 64}+0", "txt:-"],
                         capture_output=True, text=True, check=True).stdout
    blue = red = 0
    for match in re.finditer(r"\((\d+),(\d+),(\d+)", out):
        r, g, b = (int(v) for v in match.groups())
        if r < 80 and 100 <= g <= 150 and b > 170:
            blue += 1
        elif r > 180 and g < 90 and b < 90:
            red += 1
    return blue, red


def xdotool(*args):
    subprocess.run(["xdotool", *map(str, args)], check=True)


def main():
    server, email, password, mail_api, registered_at = start_backend()
    log(f"backend on {server}")
    watch, out = WORK / "watch", WORK / "out"
    watch.mkdir()
    out.mkdir()

    # Notifications: record every Notify call on the session bus.
    monitor_log = WORK / "notifications.log"
    monitor = subprocess.Popen(
        ["dbus-monitor", "--session", "interface='org.freedesktop.Notifications',member='Notify'"],
        stdout=open(monitor_log, "wb"), stderr=subprocess.DEVNULL)
    PROCS.append(monitor)
    # The tray host the icon docks into.
    spawn("trayer", ["trayer", "--edge", "top", "--align", "right", "--widthtype", "pixel",
                     "--width", "64", "--heighttype", "pixel", "--height", "32",
                     "--transparent", "false", "--tint", "0x333333", "--SetDockType", "false"])

    driver_port = free_port()
    spawn("tauri-driver", [os.environ.get("TAURI_DRIVER", "tauri-driver"), "--port", str(driver_port)],
          {"MP3C_CONFIG_DIR": str(WORK / "config"), "MP3C_NO_KEYRING": "1", "RUST_LOG": "info",
           # A home of its own: "Start at login" writes its autostart entry
           # to ~/.config/autostart, which must not be the user's.
           "HOME": str(WORK / "home")})
    wait_port(driver_port)
    options = ArgOptions()
    options.set_capability("browserName", "wry")
    options.set_capability("tauri:options", {"application": str(APP)})
    driver = webdriver.Remote(command_executor=f"http://127.0.0.1:{driver_port}", options=options)
    try:
        run(driver, server, email, password, watch, out, monitor_log)
        account_controls(driver, server, email, password, mail_api, registered_at)
    finally:
        driver.quit()
    headless(server, email, password)


def run(driver, server, email, password, watch, out, monitor_log):
    find = lambda css: driver.find_element(By.CSS_SELECTOR, css)  # noqa: E731

    def stage(name):
        # The list is redrawn on every update: read it fresh, never hold nodes.
        return driver.execute_script(
            "const li = [...document.querySelectorAll('#jobs li')]"
            ".find(li => li.querySelector('.name').textContent === arguments[0]);"
            "return li ? li.dataset.stage : null;", name)

    def row_text(name):
        return driver.execute_script(
            "const li = [...document.querySelectorAll('#jobs li')]"
            ".find(li => li.querySelector('.name').textContent === arguments[0]);"
            "return li ? li.querySelector('.stage').textContent : null;", name)

    def row_note(name):
        return driver.execute_script(
            "const li = [...document.querySelectorAll('#jobs li')]"
            ".find(li => li.querySelector('.name').textContent === arguments[0]);"
            "return li?.querySelector('.note')?.textContent ?? '';", name)

    def click_row_button(name, action):
        driver.execute_script(
            "const li = [...document.querySelectorAll('#jobs li')]"
            ".find(li => li.querySelector('.name').textContent === arguments[0]);"
            "li.querySelector(`button[data-action='${arguments[1]}']`).click();", name, action)

    # 1. Sign in.
    wait_until("the sign-in form", lambda: find("#signin").is_displayed())
    # "Create an account" shows only where the server accepts registrations:
    # not for a server that does not answer, yes for ours (it is open).
    register_shown = lambda: find("#register-button").is_displayed()  # noqa: E731
    for url, shown in ((server, True), (f"http://127.0.0.1:{free_port()}", False), (server, True)):
        find("#server").clear()
        find("#server").send_keys(url)
        # What the last address answered is not shown for this one, not
        # even while this one is being asked.
        assert not register_shown(), f"the create-an-account button still up while {url} is asked"
        wait_until(f"the create-an-account button {'shown' if shown else 'hidden'} for {url}",
                   lambda: register_shown() == shown)
    # The registration form asks for the password twice; two that differ
    # are said before anything is sent; "Back to sign in" undoes it.
    find("#register-button").click()
    wait_until("the registration form", lambda: find("#password2").is_displayed())
    assert find("#signin-button").text == "Create the account", find("#signin-button").text
    find("#email").send_keys(f"newcomer-{uuid.uuid4().hex[:8]}@example.com")
    find("#password").send_keys("a long password")
    find("#password2").send_keys("a long passwore")
    find("#password2").send_keys(Keys.RETURN)
    wait_until("the passwords-differ message", lambda: "not the same" in find("#signin-error").text)
    screenshot(driver, "0-register-mismatch")
    find("#register-back").click()
    wait_until("the sign-in form back", lambda: not find("#password2").is_displayed())
    assert find("#signin-button").text == "Sign in" and register_shown()
    find("#email").clear()
    find("#password").clear()
    find("#email").send_keys(email)
    # A server that cannot be reached, typed without http://: said in
    # words, the technical cause behind "Details".
    find("#server").clear()
    find("#server").send_keys(f"127.0.0.1:{free_port()}")
    find("#password").send_keys("any password")
    find("#signin-button").click()
    wait_until("the unreachable-server message",
               lambda: "Nothing answers at the server address" in find("#signin-error").text)
    assert find("#signin-error summary").text == "Details"
    closed, detail = driver.execute_script(
        "const d = document.querySelector('#signin-error details'); return [!d.open, d.textContent]")
    assert closed, "the detail shows unasked"
    assert "os error" in detail or "Connection refused" in detail, detail
    screenshot(driver, "1a-unreachable-server")
    find("#server").clear()
    find("#server").send_keys(server)
    find("#password").clear()
    find("#password").send_keys("wrong password")
    find("#signin-button").click()
    wait_until("the wrong-password message",
               lambda: "Wrong email or password" in find("#signin-error").text)
    find("#password").clear()
    find("#password").send_keys(password)
    screenshot(driver, "1-sign-in")
    # Keyboard only: Enter in the password field signs in.
    find("#password").send_keys(Keys.RETURN)
    wait_until("the main window", lambda: find("#app").is_displayed())
    log("signed in")
    # The address is not confirmed yet: the window says why no emails come.
    wait_until("the confirm-your-address banner", lambda: find("#confirm-banner").is_displayed(),
               seconds=30)
    banner = find("#confirm-banner").text
    assert "Confirm your address to get emails" in banner and email in banner, banner
    screenshot(driver, "1b-confirm-banner")

    # Record every stage each file shows, as the user would see them.
    driver.execute_script("""
        window.__stages = {};
        const note = () => document.querySelectorAll('#jobs li').forEach(li => {
          const name = li.querySelector('.name').textContent;
          const seen = (window.__stages[name] ||= []);
          if (seen[seen.length - 1] !== li.dataset.stage) seen.push(li.dataset.stage);
        });
        new MutationObserver(note).observe(document.getElementById('jobs'),
          {childList: true, subtree: true, attributes: true});
    """)

    # 2. Choose folders (typed; the Choose… buttons open the native picker).
    # A watched folder that does not exist is not saved as if watched: the
    # window offers to create it. Enter in a field saves.
    missing = WORK / "not yet"
    find("#watch-dir").send_keys(str(missing))
    find("#out-dir").send_keys(str(out))
    find("#watch-dir").send_keys(Keys.RETURN)
    wait_until("the missing-folder message", lambda: "does not exist" in find("#folders-message").text)
    assert find("#folders-create").is_displayed()
    screenshot(driver, "2a-missing-folder")
    find("#folders-create").click()
    wait_until("the folder created and saved", lambda: "Saved" in find("#folders-message").text)
    assert missing.is_dir()
    find("#watch-dir").clear()
    find("#watch-dir").send_keys(str(watch))
    assert find("#folders-message").text == "", "an old 'Saved' stayed up after an edit"
    find("#out-dir").send_keys(Keys.RETURN)
    wait_until("folders saved", lambda: "Saved" in find("#folders-message").text)
    assert driver.execute_script("return settings.watch_dir") == str(watch)

    # "Start at login": an XDG autostart entry that starts the app in the
    # tray, there while the setting is on and gone when it is off.
    autostart = WORK / "home" / ".config" / "autostart"

    def set_start_at_login(on):
        """Saves the setting; the error the dialog shows, if any (then
        the dialog is cancelled)."""
        find("#settings-button").click()
        wait_until("the settings dialog", lambda: find("#settings").is_displayed())
        box = find("#start-at-login")
        if box.is_selected() != on:
            # Scrolled to the middle, as a user would: at the dialog's edge
            # it sits under the buttons that stay in view.
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", box)
            box.click()
        find("#settings-save").click()
        wait_until("the settings dialog closed or an error",
                   lambda: not find("#settings").is_displayed() or find("#settings-error").text)
        error = find("#settings-error").text if find("#settings").is_displayed() else ""
        if error:
            # In view (the dialog is taller than the window, its buttons
            # stay at its foot) and, like the message, on the screenshot.
            screenshot(driver, "settings-error")
            find("#settings-cancel").click()
            wait_until("the settings dialog closed", lambda: not find("#settings").is_displayed())
        return error

    # Enter in Settings saves: the video goes to the Trash after its MP3.
    find("#settings-button").click()
    wait_until("the settings dialog", lambda: find("#settings").is_displayed())
    driver.execute_script("document.getElementById('after-done').value = 'delete';"
                          "document.getElementById('after-done').dispatchEvent(new Event('change'))")
    assert find("#after-done-hint").is_displayed()
    find("#settle").clear()
    find("#settle").send_keys("-5")
    find("#settle").send_keys(Keys.RETURN)
    wait_until("the settle-time message", lambda: "from 1 to 600" in find("#settings-error").text)
    find("#settle").clear()
    find("#settle").send_keys("3")
    find("#settle").send_keys(Keys.RETURN)
    wait_until("the settings dialog closed by Enter", lambda: not find("#settings").is_displayed())
    assert driver.execute_script("return settings.after_done.action") == "delete"
    assert driver.execute_script("return settings.settle_ms") == 3000

    # A fresh account has no ~/.config at all: it works there too.
    assert set_start_at_login(True) == ""
    entries = list(autostart.glob("*.desktop"))
    assert len(entries) == 1, entries
    entry = entries[0].read_text()
    assert f"Exec={APP} --minimized" in entry, entry
    assert set_start_at_login(False) == ""
    assert not list(autostart.glob("*.desktop")), "the autostart entry stayed"
    # Refused by the system (a file where the folder should be): said in the
    # dialog, and not saved as if it held.
    autostart.rmdir()
    autostart.write_text("in the way")
    error = set_start_at_login(True)
    assert "start at login" in error, error
    assert driver.execute_script("return settings.start_at_login") is False
    autostart.unlink()
    log("start at login: entry written and removed")

    # 3. A video arrives in the watched folder: uploading ... done.
    scratch = WORK / "scratch"
    scratch.mkdir()
    make_video(scratch / "Concert Recording.mp4", 40, 440)
    shutil.copy(scratch / "Concert Recording.mp4", watch / "Concert Recording.mp4.part")
    os.rename(watch / "Concert Recording.mp4.part", watch / "Concert Recording.mp4")
    name = "Concert Recording.mp4"
    wait_until("the job in the list", lambda: stage(name))
    # The tray icon shows work in progress (its blue dot).
    wait_until("the tray's working dot", lambda: tray_dots()[0] > 0, seconds=10, every=0.1)
    wait_until("conversion under way",
               lambda: stage(name) in ("converting", "downloading", "done"), every=0.1)
    if stage(name) == "converting":
        screenshot(driver, "2-converting")
    wait_until("the MP3", lambda: stage(name) == "done", seconds=180)
    stages = driver.execute_script("return window.__stages")["Concert Recording.mp4"]
    log(f"stages seen: {stages}")
    assert stages[-1] == "done", stages
    assert "uploading" in stages or "pending" in stages, stages
    # Only the audio travelled: the row showed the extraction, and says so.
    assert "extracting" in stages, stages
    assert "instead of" in row_text(name), row_text(name)
    assert (out / "Concert Recording.mp3").stat().st_size > 10_000
    screenshot(driver, "3-done")
    log(f"audio only: {row_text(name)!r}")
    # "Move the video to the Trash": in the freedesktop Trash, with its
    # .trashinfo, and the row says so.
    trash = WORK / "home" / ".local" / "share" / "Trash"
    wait_until("the video in the Trash", lambda: (trash / "files" / name).exists(), seconds=20)
    info = (trash / "info" / f"{name}.trashinfo").read_text()
    assert "[Trash Info]" in info and "Path=" in info, info
    assert not (watch / name).exists()
    wait_until("the row's note", lambda: "moved to the Trash" in row_note(name))
    log("the video went to the Trash")

    # A copy of a converted video gets a row that says so, and converts
    # again on request.
    shutil.copy(trash / "files" / name, watch / "Concert Recording copy.mp4")
    copy = "Concert Recording copy.mp4"
    wait_until("the copy's row", lambda: stage(copy) == "duplicate", seconds=30)
    assert "Already converted as Concert Recording.mp3" in row_text(copy), row_text(copy)
    screenshot(driver, "3a-copy")
    click_row_button(copy, "again")
    wait_until("the copy converted again", lambda: stage(copy) == "done", seconds=120)
    assert (out / "Concert Recording copy.mp3").exists()
    log("a copy: listed as already converted, converted again on request")

    # The setting turns it off: the next video is sent whole.
    find("#settings-button").click()
    wait_until("the settings dialog", lambda: find("#settings").is_displayed())
    box = find("#audio-only")
    assert box.is_selected(), "on by default"
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", box)
    box.click()
    find("#settings-save").click()
    wait_until("the settings dialog closed", lambda: not find("#settings").is_displayed())
    assert driver.execute_script("return settings.upload_audio_only") is False

    # 4. A notification reached the notification daemon.
    wait_until("the desktop notification",
               lambda: "MP3 ready" in monitor_log.read_text(errors="replace"), seconds=20)
    log("notification delivered over D-Bus")

    # 5. A real X drag and drop onto the window queues the file.
    make_video(scratch / "dropped.mp4", 3, 660)
    # The system Python has GTK's bindings (python3-gi); the venv does not.
    source = subprocess.Popen(["/usr/bin/python3", str(Path(__file__).with_name("drag_source.py")),
                               str(scratch / "dropped.mp4"), "1040", "640"],
                              stdout=subprocess.PIPE, text=True)
    PROCS.append(source)
    assert source.stdout.readline().strip() == "ready"
    time.sleep(1)
    sx, sy, sw, sh = window_geometry("drag-source")
    ax, ay, aw, ah = window_geometry("MP3 Converter")
    start = (sx + sw // 2, sy + sh // 2)
    target = (ax + aw // 2, ay + ah // 2)
    xdotool("mousemove", *start)
    xdotool("mousedown", 1)
    for step in range(1, 21):
        x = start[0] + (target[0] - start[0]) * step // 20
        y = start[1] + (target[1] - start[1]) * step // 20
        xdotool("mousemove", x, y)
        time.sleep(0.05)
    time.sleep(0.3)
    xdotool("mouseup", 1)
    wait_until("the dropped file in the list", lambda: stage("dropped.mp4"), seconds=30)
    log("dropped file queued")
    wait_until("the dropped file done", lambda: (out / "dropped.mp3").exists(), seconds=120)
    wait_until("the dropped file's row done", lambda: stage("dropped.mp4") == "done", seconds=30)
    dropped = driver.execute_script("return window.__stages")["dropped.mp4"]
    assert "extracting" not in dropped, f"sent whole, yet {dropped}"
    assert "instead of" not in row_text("dropped.mp4"), row_text("dropped.mp4")

    # 6. The tray icon is docked; its menu pauses watching.
    # trayer sits in the top right corner, 64x32, the icon at its right end.
    width = int(subprocess.run(["xdotool", "getdisplaygeometry"], capture_output=True,
                               text=True, check=True).stdout.split()[0])
    screenshot(driver, "4-tray")
    icon = (width - 16, 16)
    xdotool("mousemove", *icon)
    xdotool("click", 3)
    time.sleep(1)
    # The menu: the status line (counts; not selectable), a separator, Show
    # window, Pause watching, Open output folder, Quit. By keyboard, as a
    # user may: the first Down selects Show window, the second Pause.
    xdotool("key", "Down")
    time.sleep(0.2)
    xdotool("key", "Down")
    time.sleep(0.2)
    screenshot(driver, "5-tray-menu")
    xdotool("key", "Return")
    wait_until("paused from the tray", lambda: find("#status").text == "Paused", seconds=15)
    log("tray menu paused watching")

    # 7. Paused: a new video waits; resuming takes it.
    make_video(scratch / "later.mp4", 2, 550)
    shutil.copy(scratch / "later.mp4", watch / "later.mp4")
    # Seen at once, shown as waiting, not taken.
    wait_until("the waiting row", lambda: stage("later.mp4") == "waiting", seconds=15)
    assert "Paused" in row_text("later.mp4"), row_text("later.mp4")
    screenshot(driver, "6a-waiting")
    time.sleep(3)
    assert stage("later.mp4") == "waiting", "taken while paused"
    find("#pause-button").click()
    wait_until("resumed", lambda: find("#status").text == "Online", seconds=15)
    wait_until("the video taken after resuming", lambda: stage("later.mp4") == "done", seconds=120)
    screenshot(driver, "6-finished")

    # Subfolders keep their structure in the MP3 folder: two clip.mp4 stay
    # apart, and their rows say which is which.
    find("#settings-button").click()
    wait_until("the settings dialog", lambda: find("#settings").is_displayed())
    box = find("#recursive")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", box)
    box.click()
    find("#settings-save").click()
    wait_until("the settings dialog closed", lambda: not find("#settings").is_displayed())
    for season, freq in (("Season 1", 300), ("Season 2", 350)):
        (watch / season).mkdir()
        make_video(scratch / f"{season}.mp4", 2, freq)
        shutil.copy(scratch / f"{season}.mp4", watch / season / "clip.mp4")
    for season in ("Season 1", "Season 2"):
        wait_until(f"{season}/clip.mp3", lambda s=season: (out / s / "clip.mp3").exists(), seconds=120)
        wait_until(f"the {season} row done", lambda s=season: stage(f"{s}/clip.mp4") == "done", seconds=30)
    assert not (out / "clip (2).mp3").exists()
    screenshot(driver, "6c-subfolders")
    log("subfolders kept in the MP3 folder")

    # "Add files…" from the keyboard: Enter on the drop area opens the file
    # picker; a path typed there is taken.
    make_video(scratch / "picked.mp4", 2, 770)
    # The window has the keyboard (the tray menu had it last), the drop
    # area the focus, as after a Tab to it.
    xdotool("search", "--name", "^MP3 Converter$", "windowfocus", "--sync")
    driver.execute_script("document.getElementById('drop').focus()")
    assert driver.execute_script("return document.activeElement.id") == "drop"
    xdotool("key", "Return")
    wait_until("the file picker", lambda: subprocess.run(
        ["xdotool", "search", "--name", "Add videos to convert"], capture_output=True).returncode == 0,
        seconds=15)
    time.sleep(0.5)
    screenshot(driver, "6d-add-files")
    # No window manager under Xvfb: the picker gets the keyboard by hand.
    xdotool("search", "--name", "Add videos to convert", "windowfocus", "--sync")
    xdotool("key", "ctrl+l")
    time.sleep(0.3)
    xdotool("type", "--delay", "20", str(scratch / "picked.mp4"))
    xdotool("key", "Return")
    wait_until("the picked file done", lambda: stage("picked.mp4") == "done", seconds=120)
    assert (out / "picked.mp3").exists()
    log("a file added from the keyboard")

    # The tray is idle again: no dot.
    wait_until("an idle tray icon", lambda: tray_dots() == (0, 0), seconds=15)

    # A file the server refuses shows failed with its reason in words (the
    # server's text behind "Details"), no Retry (it cannot help), and the
    # tray turns red.
    (watch / "meeting notes.mp4").write_text("these are notes, not a video\n" * 40)
    wait_until("the refused file", lambda: stage("meeting notes.mp4") == "failed", seconds=60)
    reason, detail, retry = driver.execute_script(
        "const li = [...document.querySelectorAll('#jobs li')].find(li => li.dataset.stage === 'failed');"
        "return [li.querySelector('.stage').textContent, li.querySelector('details')?.textContent ?? '',"
        " !!li.querySelector(\"button[data-action='retry']\")]")
    assert "not a video or audio file the server can convert" in reason, reason
    assert "unsupported media type" in detail, detail
    assert not retry, "Retry offered where it cannot help"
    wait_until("the tray's error dot", lambda: tray_dots()[1] > 0, seconds=15)
    screenshot(driver, "6b-failed")
    log(f"failure shown: {reason!r}; tray icon red")

    # 8. A second launch only brings the first window forward, and exits.
    second = subprocess.run([str(APP)], env={**os.environ, "MP3C_CONFIG_DIR": str(WORK / "config"),
                                             "MP3C_NO_KEYRING": "1"},
                            capture_output=True, timeout=30)
    assert second.returncode == 0, second.stderr[-2000:]
    assert find("#status").text == "Online", "the first instance is gone"
    log("a second launch handed over to the first instance")

    # Open MP3 and Show in folder where no application takes MP3 files or
    # folders (as on this test's desktop): said so, with the path to copy,
    # never as if the MP3 were missing.
    mp3 = str(out / "Concert Recording.mp3")
    for action, mime, what in (("open", "audio/mpeg", "play MP3 files"), ("reveal", "inode/directory", "show folders")):
        handler = subprocess.run(["xdg-mime", "query", "default", mime], capture_output=True, text=True,
                                 env={**os.environ, "HOME": str(WORK / "home")}).stdout.strip()
        if handler:
            log(f"{action}: this desktop has {handler} for {mime}; the no-application path is not tried")
            continue
        click_row_button(name, action)
        wait_until(f"the path offered ({action})", lambda: find("#copy-path").is_displayed(), seconds=15)
        assert f"No application to {what}" in find("#copy-path-text").text, find("#copy-path-text").text
        assert find("#copy-path-value").get_attribute("value") == mp3, find("#copy-path-value").get_attribute("value")
        screenshot(driver, f"6e-no-app-{action}")
        find("#copy-path-close").click()
        wait_until("the path dialog closed", lambda: not find("#copy-path").is_displayed())

    # 9. Readable at 200%: every size is in rem, so doubling the root font
    # doubles the text; everything wraps, nothing runs off to the side.
    # Ctrl++ zooms in a step at a time up to 200%, Ctrl+0 goes back.
    root_size = lambda: driver.execute_script(  # noqa: E731
        "return document.documentElement.style.fontSize")
    for _ in range(6):
        find("#drop").send_keys(Keys.CONTROL + "=")
    assert root_size() == "200%", f"Ctrl++ six times: {root_size()!r}"
    time.sleep(0.5)
    screenshot(driver, "7-zoom-200")
    overflow = driver.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
    wide = driver.execute_script(
        "const w = document.documentElement.clientWidth;"
        "return [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > w + 1)"
        ".map(e => e.tagName + '#' + e.id + '.' + e.className).slice(0, 8)")
    assert overflow <= 0, f"{overflow} px overflow sideways at 200%: {wide}"
    find("#drop").send_keys(Keys.CONTROL + "0")
    assert root_size() == "", f"Ctrl+0: {root_size()!r}"


def account_controls(driver, server, email, password, mail_api, registered_at):
    """Confirming the address from the banner, the account dialog, and
    signing out everywhere: from the app, and from another device."""
    find = lambda css: driver.find_element(By.CSS_SELECTOR, css)  # noqa: E731

    # "Send the link again": a link a minute at most (registration sent one).
    time.sleep(max(0.0, registered_at + 62 - time.time()))
    find("#confirm-resend").click()
    wait_until("the link sent", lambda: "Sent" in find("#confirm-message").text, seconds=20)
    wait_until("the second confirmation mail", lambda: len(mails_to(mail_api, email)) == 2, seconds=20)
    find("#confirm-resend").click()
    wait_until("the once-a-minute answer",
               lambda: "less than a minute ago" in find("#confirm-message").text, seconds=20)
    screenshot(driver, "8-confirm-resend")
    assert len(mails_to(mail_api, email)) == 2, "mailed past the limit"
    # The link opened in a browser confirms the address; the window sees it
    # when it comes back to the front.
    token = link_token(mail_api, mails_to(mail_api, email)[0]["ID"])
    status, body = api_call("POST", f"{server}/api/v1/confirm", {"token": token})
    assert status == 200 and body["email_confirmed"], (status, body)
    driver.execute_script("window.dispatchEvent(new Event('focus'))")
    wait_until("the banner gone", lambda: not find("#confirm-banner").is_displayed(), seconds=20)
    log("address confirmed; the banner went")

    # The account dialog: the address, the quotas; a wrong current password
    # is said, and changes nothing.
    find("#account-button").click()
    wait_until("the account dialog", lambda: find("#account").is_displayed())
    listed = find("#account-list").text
    assert "Confirmed" in listed and "of 10 at once" in listed, listed
    find("#current-password").send_keys("not my password")
    find("#new-password").send_keys("another password")
    find("#new-password").send_keys(Keys.RETURN)
    wait_until("the wrong-password message", lambda: "not right" in find("#password-error").text)
    assert find("#account").is_displayed() and find("#status").text == "Online"
    screenshot(driver, "9-account")

    # Sign out everywhere from the app: asked first; the other devices'
    # sessions end with the app's.
    status, body = api_call("POST", f"{server}/api/v1/login", {"email": email, "password": password})
    assert status == 200, (status, body)
    phone = body["token"]
    find("#signout-everywhere").click()
    wait_until("the question", lambda: find("#confirm").is_displayed())
    screenshot(driver, "10-sign-out-everywhere")
    find("#confirm-yes").click()
    wait_until("the sign-in form", lambda: find("#signin").is_displayed(), seconds=20)
    assert "Signed out everywhere" in find("#signin-error").text, find("#signin-error").text
    wait_until("the other device refused",
               lambda: api_call("GET", f"{server}/api/v1/jobs", token=phone)[0] == 403, seconds=15)
    log("signed out everywhere from the app")

    # Signed out everywhere from another device: the window notices alone.
    find("#password").send_keys(password)
    find("#password").send_keys(Keys.RETURN)
    wait_until("the main window again", lambda: find("#app").is_displayed())
    status, body = api_call("POST", f"{server}/api/v1/login", {"email": email, "password": password})
    assert status == 200, (status, body)
    status, _ = api_call("POST", f"{server}/api/v1/me/sign-out-everywhere", token=body["token"])
    assert status == 204, status
    wait_until("the window back at sign-in", lambda: find("#signin").is_displayed(), seconds=30)
    assert "session ended" in find("#signin-error").text, find("#signin-error").text
    screenshot(driver, "11-signed-out-elsewhere")
    log("signed out everywhere from another device: the window asked to sign in")


def headless(server, email, password):
    """The same binary without a window: converts, logs, stops on SIGTERM."""
    watch, out = WORK / "headless-watch", WORK / "headless-out"
    watch.mkdir()
    app = subprocess.Popen(
        [str(APP), "--headless", "--server", server, "--watch", str(watch), "--out", str(out),
         "--state-dir", str(WORK / "headless-state"), "--settle-ms", "500"],
        env={**os.environ, "MP3C_EMAIL": email, "MP3C_PASSWORD": password,
             "MP3C_NO_KEYRING": "1", "RUST_LOG": "warn"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    PROCS.append(app)
    lines = []
    assert "watching" in app.stdout.readline()
    make_video(watch / "server side.mp4", 2, 330)
    deadline = time.time() + 120
    while time.time() < deadline:
        line = app.stdout.readline()
        lines.append(line.rstrip())
        if line.startswith("done server side.mp4"):
            break
    else:
        raise AssertionError(f"headless never finished: {lines}")
    assert (out / "server side.mp3").exists()
    app.send_signal(signal.SIGTERM)
    rest, _ = app.communicate(timeout=20)
    assert app.returncode == 0, f"exit {app.returncode}: {rest}"
    assert "stopping" in rest, rest
    log(f"headless: {len(lines)} progress lines, clean exit on SIGTERM")


def cleanup():
    for proc in reversed(PROCS):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in PROCS:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    # The backend's queues: quorum queues left behind cost the broker memory
    # on every later run. Best effort (rabbitmqctl needs root).
    for queue in ("video", "video.dlq", "mp3", "mp3.dlq"):
        subprocess.run(["rabbitmqctl", "-q", "delete_queue", f"{PREFIX}.{queue}"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


if __name__ == "__main__":
    try:
        main()
        log("all GUI checks passed")
    except BaseException:
        for name in ("tauri-driver", "gateway", "converter", "auth", "trayer", "smtp-catcher"):
            path = WORK / f"{name}.log"
            if path.exists():
                print(f"--- {name}.log (tail) ---")
                print("\n".join(path.read_text(errors="replace").splitlines()[-25:]))
        raise
    finally:
        cleanup()
