"""The built book, read in a real browser (headless Chromium driven by Selenium).

A learner's path: the start page, a chapter with its figures, the "next" button to the following
chapter, the lab box's download, and the search page. Screenshots of each step are saved (to
``$BOOK_SCREENSHOTS`` if set, else a temporary folder) and their folder is printed.
"""
from __future__ import annotations

import functools
import http.server
import threading
import urllib.request
from urllib.parse import urljoin

import pytest
import yaml

from book_build import BookBuild
from conftest import REPO

from headless import browser_fixture, screenshots_fixture  # noqa: E402  (skips without selenium)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHAPTER = "book/ethical-ml/day2-afternoon-fairness"


@pytest.fixture(scope="module")
def site(built: BookBuild):
    """The built HTML over HTTP on a free localhost port, as a web server would serve it."""
    handler = functools.partial(QuietHandler, directory=str(built.html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


browser = browser_fixture()
shots = screenshots_fixture("BOOK_SCREENSHOTS", "the book")


def wait(browser, condition, seconds: float = 20):
    return WebDriverWait(browser, seconds).until(condition)


def toc_order() -> list[str]:
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    return [toc["root"]] + [c["file"] for part in toc["parts"] for c in part["chapters"]]


def test_start_page(browser, site, shots):
    browser.get(site)                                           # index.html redirects to the root page
    wait(browser, EC.url_contains("book/intro.html"))
    heading = wait(browser, EC.visibility_of_element_located((By.CSS_SELECTOR, "article h1")))
    assert heading.text.strip().rstrip("#").strip() == "Responsible AI at Scale"
    captions = [e.get_attribute("textContent").strip() for e in browser.find_elements(By.CSS_SELECTOR, "p.caption")]
    assert "Day 2: Bias and fairness" in captions and "For instructors" in captions, captions
    browser.save_screenshot(str(shots / "1-start-page.png"))


def test_chapter_shows_its_figures(browser, site, shots):
    browser.get(urljoin(site, f"{CHAPTER}.html"))
    heading = wait(browser, EC.visibility_of_element_located((By.CSS_SELECTOR, "article h1")))
    assert heading.text.startswith("Day 2 afternoon")
    images = browser.find_elements(By.CSS_SELECTOR, "article .cell_output img")
    assert len(images) >= 2
    for image in images:                                        # decoded by the browser, not just linked
        browser.execute_script("arguments[0].scrollIntoView();", image)
        wait(browser, lambda b: b.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0",
                                                 image))
    browser.execute_script("window.scrollTo(0, 0);")
    browser.save_screenshot(str(shots / "2-chapter.png"))


def test_next_button_leads_to_the_next_chapter(browser, site, shots):
    order = toc_order()
    browser.get(urljoin(site, f"{CHAPTER}.html"))
    nxt = wait(browser, EC.presence_of_element_located((By.CSS_SELECTOR, "a.right-next")))
    browser.execute_script("arguments[0].scrollIntoView();", nxt)
    nxt.click()
    expected = order[order.index(CHAPTER) + 1]
    wait(browser, EC.url_contains(f"{expected}.html"))
    wait(browser, EC.visibility_of_element_located((By.CSS_SELECTOR, "article h1")))
    browser.save_screenshot(str(shots / "3-next-chapter.png"))


def test_lab_box_downloads_the_released_notebook(browser, site, shots):
    browser.get(urljoin(site, f"{CHAPTER}.html"))
    box = wait(browser, EC.visibility_of_element_located((By.CSS_SELECTOR, "div.course-lab.lab-released")))
    assert box.find_element(By.CSS_SELECTOR, ".admonition-title").text.startswith("Graded lab")
    link = box.find_element(By.CSS_SELECTOR, "a.download")
    href = link.get_attribute("href")                           # absolute, as the browser resolved it
    with urllib.request.urlopen(href, timeout=10) as response:  # what a click downloads
        assert response.read() == (REPO / "labs" / "day2-fairness" / "fairness.ipynb").read_bytes()
    launch = box.find_element(By.CSS_SELECTOR, "a.lab-launch").get_attribute("href")
    assert "/hub/user-redirect/git-pull?" in launch and "labs%2Fday2-fairness%2Ffairness.ipynb" in launch
    browser.execute_script("arguments[0].scrollIntoView();", box)
    box.screenshot(str(shots / "4-lab-box.png"))


def test_search_finds_the_fairness_chapter(browser, site, shots):
    browser.get(urljoin(site, "search.html?q=equalized+odds"))
    results = wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "#search-results ul.search li a"), 60)
    hrefs = [a.get_attribute("href") for a in results]
    assert any(f"{CHAPTER}.html" in h for h in hrefs), hrefs
    browser.save_screenshot(str(shots / "5-search.png"))
