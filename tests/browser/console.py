"""Uses reelay's web console in headless Chromium as a person would.

usage: console.py PLAN_JSON

PLAN_JSON: {"console": url of /console/, "user_token": jwt, "clip": path
of a video file, "rollout": id of a draft rollout, "onboarding": the ids
of two onboarding videos in order, "screenshots": folder}.
With "mode": "resume" it only uploads the clip (through a proxy the test
cuts on the way).

A user signs in with #token= (and later by pasting it), uploads the clip through Uppy and waits for
READY, plays it to the end (the player sends its events), likes and
comments, and reads the statistics. Then a new admin signs in with the
development button, approves the video in the moderation queue, moves
the first onboarding video down, and starts, pauses and resumes the rollout while its counts move. Prints one
JSON object with what each step saw; the Rust test judges it. Screenshots
of each page go to the folder.
"""
import json
import os
import sys
import tempfile
import time

from selenium.webdriver.common.by import By

from play import browser, wait


class Run:
    def __init__(self, driver, plan):
        self.driver = driver
        self.plan = plan
        self.report = {"steps": []}

    def js(self, script, *args):
        return self.driver.execute_script(script, *args)

    def until(self, what, script, seconds, *args):
        """Polls `script` until truthy; records the step and what it got."""
        deadline = time.monotonic() + seconds
        value = None
        while time.monotonic() < deadline:
            value = self.js(script, *args)
            if value:
                break
            time.sleep(0.1)
        self.report["steps"].append({"step": what, "ok": bool(value), "value": value})
        if not value:
            notice = self.js("return document.getElementById('notice').textContent;")
            raise RuntimeError(f"{what}: not within {seconds} s (notice: {notice!r})")
        return value

    def click(self, css):
        """Finds and clicks in one script: pages redraw (the fleet every
        2 s), so an element found in one call can be gone by the next."""
        if not self.js("const e = document.querySelector(arguments[0]); if (e) e.click(); return !!e;", css):
            raise RuntimeError(f"nothing to click at {css}")

    def shot(self, name):
        self.driver.save_screenshot(os.path.join(self.plan["screenshots"], f"{name}.png"))

    def go(self, fragment):
        self.js("location.hash = arguments[0];", fragment)

    def user(self):
        d = self.driver
        d.get(f"{self.plan['console']}#token={self.plan['user_token']}")
        self.until("signed in from the fragment", "return location.hash === '#/videos' && !!document.getElementById('sign-out');", 10)
        self.report["fragment_left_url"] = "token=" not in d.current_url
        self.go("#/upload")
        self.until("Uppy is ready", "return !!document.querySelector('.uppy-Dashboard-input');", 10)
        d.find_element(By.CSS_SELECTOR, ".uppy-Dashboard-input").send_keys(self.plan["clip"])
        self.until("the upload button", "return !!document.querySelector('.uppy-StatusBar-actionBtn--upload');", 10)
        self.click(".uppy-StatusBar-actionBtn--upload")
        self.until("the progress reaches 100 %", "return document.getElementById('upload-progress').value >= 100;", 60)
        video_id = self.until("the upload is followed", "return document.querySelector('#uploads .upload')?.dataset.id;", 20)
        self.report["video_id"] = video_id
        self.shot("upload")
        seen = set()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status = self.js("return document.querySelector('#uploads #status')?.textContent;")
            if status:
                seen.add(status)
            if status in ("READY", "FAILED"):
                break
            time.sleep(0.2)
        self.report["statuses_seen"] = sorted(seen)

        self.go(f"#/videos/{video_id}")
        self.until("the player with its poster", "const v = document.getElementById('player'); return v && v.poster;", 20)
        self.report["poster_loads"] = self.driver.execute_async_script(
            "const img = new Image(); img.onload = () => arguments[0](img.naturalWidth);"
            "img.onerror = () => arguments[0](0); img.src = document.getElementById('player').poster;"
        )
        self.shot("video")
        self.js("document.getElementById('player').play();")
        self.report["played_past_2s"] = bool(
            self.until("playback advances", "return document.getElementById('player').currentTime > 2;", 40)
        )
        self.until("playback ends", "return document.getElementById('player').ended;", 40)
        self.report["current_time"] = self.js("return document.getElementById('player').currentTime;")

        self.click("#like")
        self.until("the like counts", "return document.getElementById('like')?.getAttribute('aria-pressed') === 'true' && document.getElementById('like').textContent.includes('1');", 10)
        self.driver.find_element(By.ID, "comment").send_keys("Lovely clip <b>not bold</b>")
        self.js("document.getElementById('comment').form.requestSubmit();")
        self.report["comment_shown"] = self.until(
            "the comment is listed as text",
            "const li = document.querySelector('#comments li p'); return li && !li.querySelector('b') && li.textContent;",
            10,
        )
        self.shot("watched")

        self.go(f"#/videos/{video_id}/stats")
        views = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and views < 1:
            time.sleep(1)
            # The page as it stands now: the view lands within about a second.
            self.js("window.dispatchEvent(new HashChangeEvent('hashchange'));")
            views = wait(d, "const f = document.getElementById('figures'); return f && Number(f.querySelector('dd').textContent);", 5) or 0
        self.report["views"] = views
        self.until("the charts are drawn", "return document.querySelectorAll('.chart canvas').length >= 1;", 10)
        self.shot("statistics")

    def resume(self):
        """Uploads `clip` while the test cuts the connection for a while;
        the upload must still reach 100 % by itself."""
        d = self.driver
        d.get(f"{self.plan['console']}#token={self.plan['user_token']}")
        self.until("signed in", "return !!document.getElementById('sign-out');", 10)
        self.go("#/upload")
        self.until("Uppy is ready", "return !!document.querySelector('.uppy-Dashboard-input');", 10)
        d.find_element(By.CSS_SELECTOR, ".uppy-Dashboard-input").send_keys(self.plan["clip"])
        self.until("the upload button", "return !!document.querySelector('.uppy-StatusBar-actionBtn--upload');", 10)
        self.click(".uppy-StatusBar-actionBtn--upload")
        self.until("the progress reaches 100 %", "return document.getElementById('upload-progress').value >= 100;", 120)
        self.report["video_id"] = self.until(
            "the upload is followed", "return document.querySelector('#uploads .upload')?.dataset.id;", 20
        )

    def admin(self):
        self.click("#sign-out")
        self.until("the sign-in page", "return !!document.getElementById('mint-admin');", 10)
        self.shot("sign-in")
        # A pasted token signs in as well.
        self.driver.find_element(By.ID, "token").send_keys(self.plan["user_token"])
        self.js("document.getElementById('token').form.requestSubmit();")
        self.until("signed in with a pasted token", "return location.hash === '#/videos' && (document.getElementById('who')?.textContent || '').startsWith('user');", 10)
        self.click("#sign-out")
        self.until("the sign-in page again", "return !!document.getElementById('mint-admin');", 10)
        self.click("#mint-admin")
        self.until("signed in as a new admin", "return (document.getElementById('who')?.textContent || '').startsWith('admin');", 10)
        video_id = self.report["video_id"]
        self.go("#/admin/moderation")
        self.until("the video awaits moderation", "return !!document.querySelector(`#moderation tr[data-id='${arguments[0]}']`);", 10, video_id)
        self.shot("moderation")
        self.js(
            "[...document.querySelector(`#moderation tr[data-id='${arguments[0]}']`).querySelectorAll('button')].find(b => b.textContent === 'Approve').click();",
            video_id,
        )
        self.until("it leaves the queue", "return !document.querySelector(`#moderation tr[data-id='${arguments[0]}']`);", 10, video_id)

        first, second = self.plan["onboarding"]
        self.go("#/admin/onboarding")
        self.until("the onboarding videos in order", "return [...document.querySelectorAll('#onboarding-order li')].map(li => li.dataset.id).join(',') === arguments[0];", 15, f"{first},{second}")
        self.click(f"#onboarding-order li[data-id='{first}'] button[aria-label^='Move down']")
        self.until("moved down", "return document.querySelector('#onboarding-order li')?.dataset.id === arguments[0];", 5, second)
        self.js("[...document.querySelectorAll('main button')].find(b => b.textContent === 'Save order').click();")
        self.until("the order is saved", "return document.getElementById('notice').textContent.includes('Order saved');", 10)
        self.shot("onboarding")

        rollout = self.plan["rollout"]
        card = f"#rollouts .rollout[data-id='{rollout}']"
        self.go("#/admin/fleet")
        self.until("the draft rollout", f"return document.querySelector(\"{card}\")?.dataset.state === 'draft';", 15)
        self.until("devices per version are drawn", "return document.querySelectorAll('#versions .bar').length >= 1;", 10)
        self.click(f"{card} button[data-command=start]")
        count = f"Number(document.querySelector(\"{card} > p [data-count=succeeded]\")?.textContent.replace(/\\D/g, '') || 0)"
        succeeded = f"return {count};"
        self.until("the rollout runs", f"return document.querySelector(\"{card}\")?.dataset.state === 'running';", 15)
        self.until("devices succeed", f"return {count} >= 2;", 60)
        self.click(f"{card} button[data-command=pause]")
        self.until("the rollout pauses", f"return document.querySelector(\"{card}\")?.dataset.state === 'paused';", 15)
        # What was in flight at the pause lands; nothing new is sent.
        self.until(
            "nothing in flight",
            f"return !document.querySelector(\"{card} > p [data-count=requested], {card} > p [data-count=acknowledged]\");",
            30,
        )
        at_pause = self.js(succeeded)
        self.shot("fleet-paused")
        time.sleep(3)
        self.report["succeeded_at_pause"] = at_pause
        self.report["succeeded_while_paused"] = self.js(succeeded)
        self.click(f"{card} button[data-command=resume]")
        self.until("the rollout runs again", f"return document.querySelector(\"{card}\")?.dataset.state === 'running';", 15)
        self.report["succeeded_after_resume"] = self.until(
            "the counts move after the resume",
            f"const n = {count}; return n > arguments[0] ? n : null;",
            60,
            self.report["succeeded_while_paused"],
        )
        self.shot("fleet")


def main() -> None:
    plan = json.loads(sys.argv[1])
    with tempfile.TemporaryDirectory() as profile:
        driver = browser(profile)
        run = Run(driver, plan)
        try:
            driver.set_script_timeout(30)
            driver.set_window_size(1280, 900)
            if plan.get("mode") == "resume":
                run.resume()
            else:
                run.user()
                run.admin()
        except Exception as error:  # the report says where it stopped
            run.report["error"] = f"{type(error).__name__}: {error}"
            try:
                run.shot("failure")
            except Exception:
                pass
        finally:
            run.report["console"] = [
                entry["message"]
                for entry in driver.get_log("browser")
                if entry.get("level") in ("SEVERE", "ERROR")
            ]
            driver.quit()
    print(json.dumps(run.report))


if __name__ == "__main__":
    main()
