"""The owner's and the member's journeys in a real browser: headless Debian Chromium driven by Selenium.

One browser and one served stack (a real sidecar and the console on uvicorn, in a thread of
their own) for the whole module; the tests run in order, as one person's session would.
Screenshots of every page at 1280x800 and 390x844 go to tests/artifacts/console/ (ignored
by git; the path is printed). Without /usr/bin/chromium and /usr/bin/chromedriver these
tests fail, naming the command that installs them: they never skip.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.ui import WebDriverWait

if TYPE_CHECKING:
    from console.conftest import ServedStack, Tokens

CHROMIUM: Final = Path("/usr/bin/chromium")
CHROMEDRIVER: Final = Path("/usr/bin/chromedriver")
INSTALL: Final = "make browser  (as root: apt-get install -y chromium chromium-driver)"
ARTIFACTS: Final = Path(__file__).resolve().parents[1] / "artifacts" / "console"
SIZES: Final = {"desktop": (1280, 800), "phone": (390, 844)}
WAIT: Final = 10.0  # seconds any browser wait may take


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"the console's browser tests need {' and '.join(missing)}: run  {INSTALL}", pytrace=False)
    profile = tempfile.mkdtemp(prefix="console-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,800", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def shots() -> Callable[[WebDriver, str], None]:
    """`shot(driver, name)`: the page as it is now, at each size, into tests/artifacts/console/."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    print(f"\nconsole screenshots: {ARTIFACTS}")

    def shot(driver: WebDriver, name: str) -> None:
        for label, (width, height) in SIZES.items():
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": width, "height": height, "deviceScaleFactor": 1, "mobile": label == "phone",
            })
            driver.get_screenshot_as_file(str(ARTIFACTS / f"{name}-{width}x{height}.png"))
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False,
        })

    return shot


# -- helpers --------------------------------------------------------------------------------------


def open_page(driver: WebDriver, served: ServedStack, path: str) -> None:
    driver.get(served.url + path)


def wait_for(driver: WebDriver, css: str) -> WebElement:
    return WebDriverWait(driver, WAIT).until(lambda d: d.find_element(By.CSS_SELECTOR, css))


def wait_url(driver: WebDriver, path: str) -> None:
    WebDriverWait(driver, WAIT).until(lambda d: d.current_url.split("?")[0].endswith(path))


def flash(driver: WebDriver) -> str:
    return wait_for(driver, ".flash").text


def row(driver: WebDriver, category_id: str) -> WebElement:
    return driver.find_element(By.CSS_SELECTOR, f'tr[data-category-id="{category_id}"]')


def active(driver: WebDriver) -> WebElement:
    return driver.switch_to.active_element


def press(driver: WebDriver, *keys: str) -> None:
    active(driver).send_keys(*keys)


def focus_is_visible(driver: WebDriver) -> bool:
    style = driver.execute_script(
        "const s = getComputedStyle(document.activeElement); return [s.outlineStyle, s.outlineWidth];"
    )
    return bool(style[0] != "none" and style[1] not in ("0px", ""))


def console_errors(driver: WebDriver) -> list[str]:
    """Browser console errors (CSP violations, script errors, failed loads) but the 4xx pages the test asked for."""
    return [
        e["message"] for e in driver.get_log("browser")
        if e.get("level") == "SEVERE" and "the server responded with a status of 4" not in e["message"]
    ]


def signed_in(driver: WebDriver, served: ServedStack, token: str) -> None:
    open_page(driver, served, "/login")
    field = wait_for(driver, "#token")
    assert active(driver) == field, "the token field has the focus on arrival"
    field.send_keys(token, Keys.ENTER)
    wait_url(driver, "/categories")


# -- the owner ------------------------------------------------------------------------------------


def test_owner_creates_edits_and_disables_a_category_by_keyboard(
    browser: WebDriver, served: ServedStack, shots: Callable[[WebDriver, str], None], tokens: Tokens
) -> None:
    driver = browser
    open_page(driver, served, "/login")
    wait_for(driver, "#token")
    shots(driver, "01-login")
    signed_in(driver, served, tokens.owner)
    assert flash(driver) == "Signed in as owner."
    shots(driver, "02-categories")

    # Create, by keyboard: a wrong id first (the API's message beside the field), then the right one.
    driver.find_element(By.LINK_TEXT, "Create category").send_keys(Keys.ENTER)
    wait_url(driver, "/categories/new")
    name = wait_for(driver, "#f-name")
    name.send_keys("Social Media Cookies", Keys.TAB)
    assert active(driver).get_attribute("id") == "f-id" and focus_is_visible(driver)
    press(driver, "5C", Keys.TAB)
    assert active(driver).get_attribute("id") == "f-destinations"
    press(driver, "facebook", Keys.ENTER, "tiktok", Keys.TAB)
    assert active(driver).text == "Cancel"
    press(driver, Keys.TAB)
    assert active(driver).text == "Create category"
    press(driver, Keys.ENTER)
    error = wait_for(driver, "#f-id-error")
    assert error.text == "must not start with a digit"
    assert driver.find_element(By.ID, "f-id").get_attribute("aria-invalid") == "true"
    assert driver.find_element(By.ID, "f-name").get_attribute("value") == "Social Media Cookies"
    shots(driver, "03-create-error")
    id_field = driver.find_element(By.ID, "f-id")
    id_field.clear()
    id_field.send_keys("C0005", Keys.ENTER)  # Enter in a field submits the form
    assert flash(driver) == "Created Social Media Cookies (C0005) with 2 destinations."
    cells = row(driver, "C0005").find_elements(By.CSS_SELECTOR, ".chips li")
    assert [c.text for c in cells] == ["facebook", "tiktok"]

    # Edit: add a third destination.
    row(driver, "C0005").find_element(By.PARTIAL_LINK_TEXT, "Edit").send_keys(Keys.ENTER)
    destinations = wait_for(driver, "#f-destinations")
    assert driver.find_element(By.CSS_SELECTOR, "input[name=etag]").get_attribute("value")
    shots(driver, "04-edit")
    destinations.send_keys(Keys.CONTROL, Keys.END)
    destinations.send_keys(Keys.ENTER, "snapchat")
    driver.find_element(By.CSS_SELECTOR, "button.primary").send_keys(Keys.ENTER)
    assert flash(driver) == "Saved Social Media Cookies (C0005)."
    assert [c.text for c in row(driver, "C0005").find_elements(By.CSS_SELECTOR, ".chips li")] == [
        "facebook", "tiktok", "snapchat",
    ]

    # Turn it off: the switch opens "Disable Social Media Cookies?".
    row(driver, "C0005").find_element(By.CSS_SELECTOR, "a.switch").send_keys(Keys.ENTER)
    title = wait_for(driver, "#dialog-title")
    assert title.text == "Disable Social Media Cookies?"
    typed = driver.find_element(By.ID, "confirm_name")
    button = driver.find_element(By.ID, "confirm-submit")
    assert active(driver) == typed, "the dialog's name field has the focus"
    assert not button.is_enabled(), "the button waits for the name"
    typed.send_keys("Social Media")
    assert not button.is_enabled(), "a wrong name keeps the button disabled"
    shots(driver, "05-disable-dialog")

    # A forced POST of the wrong name is refused by the server and changes nothing.
    before = served.sidecar.path.read_bytes(), served.sidecar.store.current.generation
    driver.execute_script("document.getElementById('confirm-form').submit();")
    error = wait_for(driver, "#confirm-error")
    assert "confirm_name must equal its name 'Social Media Cookies' exactly" in error.text
    assert (served.sidecar.path.read_bytes(), served.sidecar.store.current.generation) == before
    shots(driver, "06-disable-refused")

    # The right name, then Tab to the button and Enter: keyboard only.
    typed = driver.find_element(By.ID, "confirm_name")
    assert active(driver) == typed
    typed.send_keys(Keys.CONTROL, "a")
    typed.send_keys("Social Media Cookies")
    assert driver.find_element(By.ID, "confirm-submit").is_enabled()
    press(driver, Keys.TAB)
    assert active(driver).text == "Cancel" and focus_is_visible(driver)
    press(driver, Keys.TAB)
    assert active(driver).get_attribute("id") == "confirm-submit" and focus_is_visible(driver)
    press(driver, Keys.ENTER)
    assert flash(driver) == "Disabled Social Media Cookies (C0005): it no longer gates its destinations."
    assert row(driver, "C0005").find_elements(By.CSS_SELECTOR, "button.switch.off")
    assert served.sidecar.store.current.index.mapping.category("C0005").enabled is False  # type: ignore[union-attr]
    shots(driver, "07-categories-after")

    # The audit trail: every change, by alice, newest first.
    driver.find_element(By.LINK_TEXT, "Audit trail").send_keys(Keys.ENTER)
    wait_url(driver, "/audit")
    rows = driver.find_elements(By.CSS_SELECTOR, "table.audit tbody tr")
    seen = [(r.find_element(By.CSS_SELECTOR, "[data-label=Action]").text,
             r.find_element(By.CSS_SELECTOR, "[data-label=Actor]").text,
             r.find_element(By.CSS_SELECTOR, "[data-label=Category]").text) for r in rows]
    mine = [s for s in seen if s[2] == "C0005"]
    assert [a for a, _, _ in mine] == [
        "CATEGORY_DISABLED", "MAPPING_CREATED", "CATEGORY_UPDATED", "MAPPING_CREATED", "MAPPING_CREATED",
        "CATEGORY_CREATED",
    ]
    assert {actor for _, actor, _ in mine} == {"alice"}
    shots(driver, "08-audit")
    Select(driver.find_element(By.ID, "a-action")).select_by_value("CATEGORY_DISABLED")
    driver.find_element(By.CSS_SELECTOR, ".filters button[type=submit]").send_keys(Keys.ENTER)
    WebDriverWait(driver, WAIT).until(lambda d: "action=CATEGORY_DISABLED" in d.current_url)
    actions = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "table.audit [data-label=Action]")]
    assert actions == ["CATEGORY_DISABLED"]

    driver.find_element(By.LINK_TEXT, "Policy status").send_keys(Keys.ENTER)
    wait_url(driver, "/status")
    generation = driver.find_element(By.CSS_SELECTOR, "[data-field=generation]").text
    assert generation == str(served.sidecar.store.current.generation)
    shots(driver, "09-status")

    # Turn it back on with its switch; the delete dialog asks for the name too, and Escape leaves it.
    driver.find_element(By.LINK_TEXT, "Categories").send_keys(Keys.ENTER)
    wait_url(driver, "/categories")
    row(driver, "C0005").find_element(By.CSS_SELECTOR, "button.switch.off").send_keys(Keys.ENTER)
    assert flash(driver) == "Enabled Social Media Cookies (C0005)."
    assert row(driver, "C0005").find_elements(By.CSS_SELECTOR, "a.switch.on")
    row(driver, "C0005").find_element(By.PARTIAL_LINK_TEXT, "Delete").send_keys(Keys.ENTER)
    assert wait_for(driver, "#dialog-title").text == "Delete Social Media Cookies?"
    assert not driver.find_element(By.ID, "confirm-submit").is_enabled()
    shots(driver, "11-delete-dialog")
    press(driver, Keys.ESCAPE)
    wait_url(driver, "/categories")
    assert row(driver, "C0005")  # still there

    assert console_errors(driver) == [], "no CSP violation or script error on any page"
    driver.find_element(By.CSS_SELECTOR, ".account button").send_keys(Keys.ENTER)
    wait_url(driver, "/login")


# -- the member -----------------------------------------------------------------------------------

WRITE_CONTROLS: Final = (
    "a[href='/categories/new']", "a[href$='/edit']", "a[href$='/disable']", "a[href$='/delete']",
    "form[action$='/enable']", ".switch", "form[method=post]:not([action='/logout'])",
)


def test_member_sees_every_page_without_write_controls_and_a_forged_post_is_refused(
    browser: WebDriver, served: ServedStack, shots: Callable[[WebDriver, str], None], tokens: Tokens
) -> None:
    driver = browser
    signed_in(driver, served, tokens.member)
    assert flash(driver) == "Signed in as member (read-only)."
    for path in ("/categories", "/audit", "/status"):
        open_page(driver, served, path)
        wait_for(driver, "main h1")
        found = [css for css in WRITE_CONTROLS if driver.find_elements(By.CSS_SELECTOR, css)]
        assert found == [], f"{path} renders write controls for a member: {found}"
    open_page(driver, served, "/categories")
    assert row(driver, "C0002").find_element(By.CSS_SELECTOR, "[data-label=Enabled]").text == "Enabled"
    shots(driver, "10-member-categories")

    before = served.sidecar.path.read_bytes(), served.sidecar.store.current.generation
    driver.execute_script("""
        const f = document.createElement('form');
        f.method = 'post';
        f.action = '/categories/C0002/disable';
        for (const [k, v] of [['csrf_token', document.querySelector('input[name=csrf_token]').value],
                              ['confirm_name', 'Performance Cookies']]) {
            const i = document.createElement('input');
            i.type = 'hidden'; i.name = k; i.value = v; f.appendChild(i);
        }
        document.body.appendChild(f);
        f.submit();
    """)
    message = wait_for(driver, "main .error")
    assert "DisableCategory requires role owner; principal 'bob' is member" in message.text
    assert driver.find_element(By.CSS_SELECTOR, "main h1").text == "Not allowed"
    shots(driver, "12-member-refused")
    assert (served.sidecar.path.read_bytes(), served.sidecar.store.current.generation) == before
    assert console_errors(driver) == []
