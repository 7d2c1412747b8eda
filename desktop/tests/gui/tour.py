"""A walk through the desktop app's window as a new user takes it, one
screenshot per point of issue 24, the same steps against any build of the
app: run on an older binary and on the current one, it gives before/after
pairs (scripts/desktop-tour). It asserts nothing: a step the build cannot
do is logged, and its screenshot shows what the window showed instead.

env: as test_gui.py (GUI_APP, GUI_BIN_DIR, GUI_ARTIFACTS, TAURI_DRIVER)
"""
import os
import shutil
import sys
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.common.options import ArgOptions

sys.path.insert(0, str(Path(__file__).parent))
import test_gui as g  # noqa: E402 (the backend and screenshot helpers)


def main():
    server, email, password, _, _ = g.start_backend()
    watch, out, scratch = g.WORK / "watch", g.WORK / "out", g.WORK / "scratch"
    for folder in (watch, out, scratch):
        folder.mkdir()
    g.make_video(scratch / "Interview.mp4", 4, 440)
    (scratch / "meeting notes.mp4").write_text("Agenda: budget, hiring.\n")
    driver_port = g.free_port()
    g.spawn("tauri-driver", [os.environ.get("TAURI_DRIVER", "tauri-driver"), "--port", str(driver_port)],
            {"MP3C_CONFIG_DIR": str(g.WORK / "config"), "MP3C_NO_KEYRING": "1",
             "HOME": str(g.WORK / "home")})
    g.wait_port(driver_port)
    options = ArgOptions()
    options.set_capability("browserName", "wry")
    options.set_capability("tauri:options", {"application": str(g.APP)})
    driver = webdriver.Remote(command_executor=f"http://127.0.0.1:{driver_port}", options=options)
    find = lambda css: driver.find_element(By.CSS_SELECTOR, css)  # noqa: E731
    shown = lambda css: bool(driver.find_elements(By.CSS_SELECTOR, css)) and find(css).is_displayed()  # noqa: E731

    def step(name, action):
        try:
            action()
        except Exception as err:  # noqa: BLE001 (the tour goes on; the screenshot shows what happened)
            g.log(f"{name}: {type(err).__name__}: {(str(err).splitlines() or [''])[0][:160]}")
        time.sleep(0.5)
        g.screenshot(driver, name)

    def settings(change, submit):
        find("#settings-button").click()
        g.wait_until("the settings dialog", lambda: find("#settings").is_displayed(), seconds=10)
        driver.execute_script(change)
        submit()
        time.sleep(1)

    def close_settings():
        if shown("#settings"):
            find("#settings-cancel").click()

    def choose(select, value):
        return (f"const s = document.getElementById('{select}'); s.value = '{value}';"
                "s.dispatchEvent(new Event('change'));")

    try:
        g.wait_until("the sign-in form", lambda: find("#signin").is_displayed())

        def unreachable():
            find("#server").clear()
            find("#server").send_keys(f"127.0.0.1:{g.free_port()}")
            find("#email").send_keys(email)
            find("#password").send_keys("any password")
            find("#signin-button").click()
            time.sleep(2)
        step("01-unreachable-server", unreachable)

        def register():
            find("#server").clear()
            find("#server").send_keys(server)
            time.sleep(1.5)
            find("#register-button").click()
            time.sleep(1.5)
        step("02-create-an-account", register)

        if shown("#register-back"):
            find("#register-back").click()
        if not shown("#app"):
            find("#password").clear()
            find("#password").send_keys(password)
            find("#signin-button").click()
        g.wait_until("the main window", lambda: find("#app").is_displayed(), seconds=30)

        def missing_folder():
            find("#watch-dir").send_keys(str(g.WORK / "not yet"))
            find("#out-dir").send_keys(str(out))
            find("#folders-save").click()
            time.sleep(1.5)
        step("03-missing-folder", missing_folder)
        find("#watch-dir").clear()
        find("#watch-dir").send_keys(str(watch))
        find("#folders-save").click()
        time.sleep(1)

        def enter_in_settings():
            settings(choose("after-done", "delete"), lambda: find("#settle").send_keys(Keys.RETURN))
            close_settings()
            find("#settings-button").click()
            time.sleep(1)
            driver.execute_script("document.getElementById('after-done').scrollIntoView({block: 'center'})")
        step("04-enter-in-settings-then-reopened", enter_in_settings)
        close_settings()

        def negative_settle():
            settings("document.getElementById('settle').value = '-5';", lambda: find("#settings-save").click())
        step("05-settle-minus-5", negative_settle)
        close_settings()

        # The video goes away after its MP3, and is converted.
        settings(choose("after-done", "delete") + "document.getElementById('settle').value = '1';",
                 lambda: find("#settings-save").click())
        close_settings()
        shutil.copy(scratch / "Interview.mp4", watch / "Interview.mp4")

        def converted_and_removed():
            g.wait_until("the MP3", lambda: (out / "Interview.mp3").exists(), seconds=120)
            time.sleep(2)
        step("06-delete-the-video", converted_and_removed)

        def copy_of_converted():
            shutil.copy(scratch / "Interview.mp4", watch / "Interview copy.mp4")
            time.sleep(6)
        step("07-copy-of-a-converted-video", copy_of_converted)

        def show_in_folder():
            driver.execute_script(
                "const b = [...document.querySelectorAll(\"#jobs button[data-action='reveal']\")].pop();"
                "b.scrollIntoView({block: 'center'}); b.click();")
            time.sleep(1.5)
        step("08-show-in-folder-without-a-file-manager", show_in_folder)
        for dialog in ("#copy-path-close",):
            if shown(dialog):
                find(dialog).click()

        def not_media():
            shutil.copy(scratch / "meeting notes.mp4", watch / "meeting notes.mp4")
            g.wait_until("the failure", lambda: driver.execute_script(
                "return [...document.querySelectorAll('#jobs li')].some(li => li.dataset.stage === 'failed')"),
                seconds=60)
            time.sleep(1)
        step("09-not-a-video", not_media)

        def paused():
            find("#pause-button").click()
            time.sleep(1)
            shutil.copy(scratch / "Interview.mp4", watch / "Later.mp4")
            time.sleep(4)
            driver.execute_script("window.scrollTo(0, 0)")
        step("10-a-file-added-while-paused", paused)
        find("#pause-button").click()

        def subfolders():
            settings("document.getElementById('recursive').checked = true;"
                     "document.getElementById('after-done').value = 'keep';",
                     lambda: find("#settings-save").click())
            close_settings()
            # Two different videos of the same name.
            for season, tone in (("Season 1", 330), ("Season 2", 550)):
                (watch / season).mkdir()
                g.make_video(watch / season / "clip.mp4", 2, tone)
            g.wait_until("two clips", lambda: len(list(out.rglob("clip*.mp3"))) == 2, seconds=120)
            time.sleep(2)
            g.log(f"subfolders: {sorted(str(p.relative_to(out)) for p in out.rglob('clip*.mp3'))}")
        step("11-two-clips-from-two-subfolders", subfolders)

        def wording():
            find("#settings-button").click()
            time.sleep(1)
        step("12-settings-wording", wording)
        close_settings()

        def zoom():
            for _ in range(3):
                find("#drop").send_keys(Keys.CONTROL + "=")
            time.sleep(1)
        step("13-ctrl-plus-three-times", zoom)
        find("#drop").send_keys(Keys.CONTROL + "0")
        driver.execute_script("document.documentElement.style.fontSize = ''")

        def narrow():
            driver.set_window_size(480, 640)
            time.sleep(1)
            driver.execute_script("window.scrollTo(0, document.body.scrollHeight)")
            time.sleep(1)
        step("14-narrow-window-scrolled-down", narrow)
    finally:
        driver.quit()


if __name__ == "__main__":
    try:
        main()
        g.log("tour done")
    finally:
        g.cleanup()
