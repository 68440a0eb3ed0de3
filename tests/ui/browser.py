"""Debian's headless Chromium driven by Selenium through chromedriver, started
the way TESTING.md says works offline as root, with a fresh profile per test."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tests.interop.tools import need_tool

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--disable-features=Translate,MediaRouter,OptimizationHints",
         "--password-store=basic", "--use-mock-keychain"]
PHONE = (375, 740)  # CSS pixels: a common phone's width
DESKTOP = (1280, 900)


def start(profile: Path, size: tuple[int, int] = DESKTOP):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    need_tool("chromium")
    need_tool("chromedriver")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={profile}")
    opts.add_argument(f"--window-size={size[0]},{size[1]}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    return driver


@dataclass
class Browser:
    """One Chromium with the registry's base URL; every page it opens must
    leave the console free of errors, and screenshots go to `shots`."""
    driver: object
    base: str
    shots: Path
    console: list[dict] = field(default_factory=list)  # every log entry seen
    _n: int = 0

    def open(self, path: str, console: bool = True) -> None:
        """Load a page of the registry (`console=False`: an error status is expected)."""
        self.driver.get(self.base + path)
        if console:
            self.settle()
        else:
            self.driver.get_log("browser")

    def follow(self, element, console: bool = True) -> None:
        """Click something that loads a new page, and wait until the new one is there
        (`console=False`: an error status is expected, so its console line is too)."""
        from selenium.common.exceptions import WebDriverException

        mark = f"page-{time.monotonic_ns()}"
        self.driver.execute_script("window.sokoTestMark = arguments[0]", mark)
        element.click()

        def gone() -> bool:  # a new document has no mark
            try:
                return self.driver.execute_script("return window.sokoTestMark") != mark
            except WebDriverException:  # caught mid-navigation: look again
                return False
        self.wait(gone, what="the next page")
        if console:
            self.settle()
        else:
            self.wait(lambda: self.driver.execute_script("return document.readyState") == "complete")
            self.driver.get_log("browser")

    def settle(self) -> None:
        """Wait for the document (and its deferred script) to be done; check the console."""
        self.wait(lambda: self.driver.execute_script("return document.readyState") == "complete")
        self.check_console()

    def check_console(self) -> None:
        entries = self.driver.get_log("browser")
        self.console += entries
        errors = [e for e in entries if e["level"] in ("SEVERE", "ERROR")]
        assert not errors, f"browser console errors on {self.driver.current_url}: {errors}"

    def wait(self, cond: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> object:
        from selenium.common.exceptions import WebDriverException

        end = time.monotonic() + timeout
        last: Exception | None = None
        while True:
            try:
                got = cond()
            except WebDriverException as e:  # the page changed under the look: look again
                got, last = None, e
            if got:
                return got
            if time.monotonic() > end:
                raise AssertionError(f"timed out waiting for {what} on {self.driver.current_url}"
                                     + (f" (last error: {last})" if last else ""))
            time.sleep(0.05)

    def shot(self, name: str) -> Path:
        self._n += 1
        path = self.shots / f"{self._n:02d}-{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def css(self, selector: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def one(self, selector: str):
        found = self.css(selector)
        assert len(found) == 1, f"{len(found)} elements match {selector!r} on {self.driver.current_url}"
        return found[0]

    def text(self) -> str:
        return self.one("body").text

    def button(self, label: str, within=None):
        """The one button whose visible text is `label`."""
        from selenium.webdriver.common.by import By

        scope = within or self.driver
        found = [b for b in scope.find_elements(By.TAG_NAME, "button") if b.text.strip() == label]
        assert len(found) == 1, f"{len(found)} buttons labelled {label!r} on {self.driver.current_url}"
        return found[0]

    def link(self, text: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.LINK_TEXT, text)

    def log_in(self, user: str, password: str) -> None:
        self.open("/ui/login")
        self.one("input[name=username]").send_keys(user)
        self.one("input[name=password]").send_keys(password)
        self.follow(self.button("Log in", self.one("main")))

    def phone(self, width: int = PHONE[0], height: int = PHONE[1]) -> None:
        """Emulate a phone's screen (a desktop window cannot get this narrow)."""
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                    {"width": width, "height": height, "deviceScaleFactor": 2, "mobile": True})

    def tab_to(self, wanted: Callable[[object], bool], what: str, limit: int = 60, back: bool = False):
        """Press Tab (Shift+Tab with `back`) until the focused element is `wanted`; it must show its focus."""
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.keys import Keys

        for _ in range(limit):
            keys = ActionChains(self.driver)
            (keys.key_down(Keys.SHIFT).send_keys(Keys.TAB).key_up(Keys.SHIFT) if back else keys.send_keys(Keys.TAB))
            keys.perform()
            el = self.driver.switch_to.active_element
            if wanted(el):
                style = self.driver.execute_script(
                    "var s = getComputedStyle(arguments[0]); return [s.outlineStyle, s.outlineWidth]", el)
                assert style[0] != "none" and style[1] not in ("0px", ""), f"{what} has no visible focus: {style}"
                return el
        raise AssertionError(f"{limit} presses of Tab never reached {what} on {self.driver.current_url}")

    def press(self, key: str) -> None:
        from selenium.webdriver.common.action_chains import ActionChains

        ActionChains(self.driver).send_keys(key).perform()

    def no_horizontal_scroll(self) -> None:
        width = self.driver.execute_script("return [document.documentElement.scrollWidth, window.innerWidth,"
                                           " document.documentElement.clientWidth]")
        assert width[0] <= width[2], f"page is {width[0]}px wide in a {width[2]}px window: {self.driver.current_url}"

    def alert_fired(self) -> bool:
        from selenium.common.exceptions import NoAlertPresentException

        try:
            self.driver.switch_to.alert
        except NoAlertPresentException:
            return False
        return True
