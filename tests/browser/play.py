"""Plays reelay's playback URLs in headless Chromium, as a web app would.

usage: play.py PAGE_URL PLAN_JSON

PAGE_URL is the player page (web/dist/player.html) on an origin of its own;
PLAN_JSON names what to play: {"hls": url, "dash": url, "poster": url,
"link": url}. Prints one JSON object: for each player how far the video
got, what the page and the browser console reported, and for the link
whether seeking worked. Driven by Selenium (PyPI) with Debian's chromium and
chromium-driver.
"""
import json
import sys
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def browser(profile: str) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--autoplay-policy=no-user-gesture-required",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def wait(driver, script: str, seconds: float):
    """Polls `script` until it returns something truthy or time runs out."""
    deadline = time.monotonic() + seconds
    value = None
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.1)
    return value


def played(driver, start: str, url: str, past: float) -> dict:
    """Starts a player on `url`; how far it got (up to `past` s) and errors."""
    driver.execute_script("window.reelay.errors.length = 0;")
    driver.execute_script(f"window.reelay.{start}(arguments[0]);", url)
    reached = wait(
        driver,
        f"return window.reelay.video().currentTime > {past} || window.reelay.errors.length > 0;",
        40,
    )
    return {
        "reached": bool(reached),
        "current_time": driver.execute_script("return window.reelay.video().currentTime;"),
        "errors": driver.execute_script("return window.reelay.errors.slice();"),
    }


def seeked(driver, url: str) -> dict:
    """Plays the original through a plain <video>, then seeks near its end
    (a Range request) and checks that playback goes on from there."""
    result = played(driver, "playFile", url, 0.5)
    duration = driver.execute_script("return window.reelay.video().duration;") or 0
    target = max(duration - 2.5, 0)
    driver.execute_script("window.reelay.video().currentTime = arguments[0];", target)
    moved = wait(
        driver,
        f"return window.reelay.video().currentTime > {target + 0.5};",
        20,
    )
    result.update(
        {
            "duration": duration,
            "seek_target": target,
            "seeked": bool(moved),
            "after_seek": driver.execute_script("return window.reelay.video().currentTime;"),
            "errors": driver.execute_script("return window.reelay.errors.slice();"),
        }
    )
    return result


def main() -> None:
    page, plan = sys.argv[1], json.loads(sys.argv[2])
    with tempfile.TemporaryDirectory() as profile:
        driver = browser(profile)
        try:
            driver.set_script_timeout(60)
            driver.get(page)
            report = {
                "poster": driver.execute_async_script(
                    "window.reelay.showPoster(arguments[0]).then(arguments[1]);", plan["poster"]
                ),
                "hls": played(driver, "playHls", plan["hls"], 2.0),
                "dash": played(driver, "playDash", plan["dash"], 2.0),
                "link": seeked(driver, plan["link"]),
            }
            report["console"] = [
                entry["message"]
                for entry in driver.get_log("browser")
                if entry.get("level") in ("SEVERE", "ERROR")
            ]
        finally:
            driver.quit()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
