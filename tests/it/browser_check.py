"""Looks at pages as a person would, in headless Chromium (Debian's chromium and chromedriver,
driven by Selenium): tests/it/pictures.rs runs it on `klio-edge report`'s HTML file and on
`serve`'s `/`.

    browser_check.py SHOT_DIR URL [URL ...]

For each URL it loads the page, waits for it to finish, and prints one JSON object per page
(a JSON list in all): the images with their natural sizes (0 means the browser could not
decode one), the browser console's warnings and errors, the ids of the page's sections, the
page's text length, and the path of a full-page screenshot (PNG) it saved in SHOT_DIR, plus
one of the gallery section scrolled into view. Nothing is judged here: the Rust test asserts.
"""

import json
import os
import sys
import tempfile

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = os.environ.get("KLIO_CHROMIUM", "/usr/bin/chromium")
DRIVER = os.environ.get("KLIO_CHROMEDRIVER", "/usr/bin/chromedriver")


def browser(profile):
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    # Headless as root in a sandbox without a network: no sandbox, no GPU, and none of the
    # background connections a closed network refuses.
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1400,1000",
    ):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)


def look(driver, url, shots, n):
    driver.get(url)
    WebDriverWait(driver, 60).until(
        lambda d: d.execute_script("return document.readyState") == "complete"
    )
    # Every <img> finished loading (decoded or failed) before naturalWidth is read.
    WebDriverWait(driver, 60).until(
        lambda d: d.execute_script(
            "return Array.from(document.images).every(i => i.complete)"
        )
    )
    images = driver.execute_script(
        "return Array.from(document.images).map(i => ({src: i.src.slice(0, 80), "
        "naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight}))"
    )
    sections = driver.execute_script(
        "return Array.from(document.querySelectorAll('section[id]')).map(s => s.id)"
    )
    svgs = driver.execute_script(
        "return Array.from(document.querySelectorAll('svg')).map(s => "
        "({w: s.getBoundingClientRect().width, texts: s.querySelectorAll('text').length}))"
    )
    text = driver.find_element(By.TAG_NAME, "body").text
    console = [
        {"level": e.get("level"), "message": e.get("message")}
        for e in driver.get_log("browser")
        if e.get("level") in ("WARNING", "SEVERE")
    ]
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, min(max(height, 800), 12000))
    full = os.path.join(shots, f"page-{n}.png")
    driver.save_screenshot(full)
    driver.set_window_size(1400, 1000)
    gallery = None
    if "gallery" in sections:
        driver.execute_script("document.getElementById('gallery').scrollIntoView()")
        gallery = os.path.join(shots, f"gallery-{n}.png")
        driver.save_screenshot(gallery)
    return {
        "url": url,
        "title": driver.title,
        "images": images,
        "sections": sections,
        "svgs": svgs,
        "text_len": len(text),
        "console": console,
        "screenshot": full,
        "gallery_screenshot": gallery,
    }


def main():
    shots, urls = sys.argv[1], sys.argv[2:]
    with tempfile.TemporaryDirectory() as profile:
        driver = browser(profile)
        try:
            out = [look(driver, u, shots, i) for i, u in enumerate(urls)]
        finally:
            driver.quit()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
