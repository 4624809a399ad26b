#!/usr/bin/env python3
"""The web console in headless Chromium (Debian's chromium, chromium-driver
and python3-selenium, Selenium 4 API).

    python3 tests/ui/console.py BASE_URL LEARN_TOKEN SPAM_EML SCREENSHOT_DIR EVAL_FOLDER

BASE_URL is `hamlet serve`'s HTTP listener (http://127.0.0.1:PORT) with
`[ui] enabled = true` and LEARN_TOKEN as its learn token, on a fresh model;
EVAL_FOLDER is a labelled folder (spam/ and ham/) under its `[ui] eval_root`,
evaluated from the Evaluate page.
Prints one line per step passed; at the first step that does not hold,
explains on stderr (a screenshot `failure.png` beside the others) and exits 1.
Run by tests/browser.rs.
"""

import os
import sys

try:
    import selenium  # noqa: F401
except ImportError:
    # Debian's python3-selenium belongs to the system interpreter; a
    # python3 of its own (pyenv, a venv) first on PATH does not see it.
    if os.path.exists("/usr/bin/python3") and not os.environ.get("HAMLET_UI_REEXEC"):
        os.environ["HAMLET_UI_REEXEC"] = "1"
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    sys.exit("console.py: selenium is missing: apt-get install -y python3-selenium chromium chromium-driver")

import email
import email.policy
import json
import re
import time
import unicodedata
import urllib.error
import urllib.request
import uuid

from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

TIMEOUT = 15
# Evaluating a few hundred messages on a debug build of two shared cores.
EVAL_TIMEOUT = 120
SHOT_MAX_HEIGHT = 2000
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Fail(Exception):
    pass


def check(cond, message):
    if not cond:
        raise Fail(message)


# ---- HTTP without the browser -------------------------------------------------

def http(method, url, body=None, headers=None):
    """(status, body bytes) of one request; HTTP errors are returned, not raised."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with OPENER.open(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def http_json(method, url, body=None, headers=None, want=(200,)):
    status, data = http(method, url, body, headers)
    check(status in want, f"{method} {url} answered {status}: {data[:300]!r}")
    try:
        return json.loads(data)
    except ValueError:
        raise Fail(f"{method} {url} did not answer JSON: {data[:300]!r}")


# ---- the browser ----------------------------------------------------------------

def start_browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def wait_for(driver, what, probe, timeout=TIMEOUT):
    """Waits (WebDriverWait, `timeout` seconds) until probe() is truthy and returns its
    value; on time-out fails saying what was last seen."""
    seen = {"last": None}

    def attempt(_):
        try:
            value = probe()
        except (WebDriverException, Fail, ValueError, KeyError, IndexError) as e:
            seen["last"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            return False
        seen["last"] = value
        return value

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(attempt)
    except TimeoutException:
        raise Fail(f"timed out after {timeout} s waiting for {what}; last seen: {seen['last']!r}")


def by_id(driver, ident):
    return driver.find_element(By.ID, ident)


def text_of(driver, ident):
    return by_id(driver, ident).get_attribute("textContent").strip()


def shown(driver, ident):
    els = driver.find_elements(By.ID, ident)
    return bool(els) and els[0].is_displayed()


def shot(driver, shots, name, full=True):
    """Saves a screenshot; `full`: the whole page (the window grown to the
    document's height, at most SHOT_MAX_HEIGHT), then the window as it was."""
    path = os.path.join(shots, name)
    size = driver.get_window_size()
    if full:
        extra = driver.execute_script("return window.outerHeight - window.innerHeight;") or 0
        height = driver.execute_script("return document.documentElement.scrollHeight;")
        driver.set_window_size(size["width"], min(SHOT_MAX_HEIGHT, height + extra))
    try:
        check(driver.save_screenshot(path), f"could not write {path}")
    finally:
        if full:
            driver.set_window_size(size["width"], size["height"])


def go(driver, page):
    """Opens a page by its tab, as a user would."""
    driver.find_element(By.CSS_SELECTOR, f'#tabs a[href="#{page}"]').click()
    wait_for(driver, f"the {page} page", lambda: shown(driver, f"page-{page}"))


# Messages the page may log: the refused sign-in's 401 is expected (and a
# browser's own favicon probe is none of the page's doing).
EXPECTED_LOG = re.compile(r"Failed to load resource: the server responded with a status of 40[13]|/favicon\.ico ")


def console_errors(driver):
    """Severe browser log entries (uncaught errors, CSP violations) that
    are not expected."""
    try:
        logs = driver.get_log("browser")
    except WebDriverException:
        return []
    return [e["message"] for e in logs if e.get("level") == "SEVERE" and not EXPECTED_LOG.search(e["message"])]


# ---- messages ----------------------------------------------------------------------

def expected_subject(raw):
    """The Subject as the history shows it: decoded, control characters
    dropped, at most 200 characters."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    subject = msg["Subject"]
    if subject is None:
        return None
    return "".join(c for c in str(subject) if unicodedata.category(c) != "Cc")[:200]


def squeeze(s):
    return " ".join(s.split())


def with_message_id(raw, mid):
    """raw with its Message-ID replaced, so it is another message to learn."""
    crlf, lf = raw.find(b"\r\n\r\n"), raw.find(b"\n\n")
    nl = b"\r\n" if crlf != -1 and (lf == -1 or crlf < lf) else b"\n"
    head, _, body = raw.partition(nl + nl)
    lines, skip = [], False
    for line in head.split(nl):
        if skip and line[:1] in (b" ", b"\t"):
            continue  # a folded Message-ID
        skip = line.lower().startswith(b"message-id:")
        if not skip:
            lines.append(line)
    lines.append(b"Message-ID: <" + mid.encode() + b">")
    return nl.join(lines) + nl + nl + body


HAM_TEXT = [
    "Hi Bob, here are the minutes of Tuesday's planning meeting. We agreed to move the quarterly "
    "budget review to next week and Carol will circulate the revised spreadsheet before Friday.",
    "Dear team, the build server will be down for maintenance on Saturday morning. Please push your "
    "branches before then; the release checklist and the test schedule are unchanged.",
    "Hello Bob, thanks for the draft of the report. I left a few comments in the margins about the "
    "methodology section and the references. Shall we discuss it over lunch on Thursday?",
]


def ham_message(i, tag):
    return (
        f"From: Carol Example <carol@corp.example>\r\nTo: bob@corp.example\r\n"
        f"Subject: Project notes {i + 1}\r\nDate: Mon, 3 Mar 2025 09:0{i}:00 +0000\r\n"
        f"Message-ID: <seed-ham-{tag}-{i}@corp.example>\r\n\r\n{HAM_TEXT[i]}\r\n"
    ).encode()


# ---- the steps ------------------------------------------------------------------------

class Run:
    def __init__(self, base, token, spam_path, shots, eval_folder):
        self.base = base.rstrip("/")
        self.token = token
        self.raw = open(spam_path, "rb").read()
        self.shots = shots
        self.eval_folder = eval_folder
        self.driver = None
        self.probability = None

    def stats(self):
        return http_json("GET", self.base + "/v1/stats")

    def cookie_header(self):
        return "; ".join(f"{c['name']}={c['value']}" for c in self.driver.get_cookies())

    def seed(self):
        """A young model has no clues: three spam messages (SPAM_EML under
        other Message-IDs) and three ham ones give the check some."""
        tag = uuid.uuid4().hex[:12]
        auth = {"Authorization": "Bearer " + self.token}
        for i in range(3):
            body = with_message_id(self.raw, f"seed-spam-{tag}-{i}@seed.example")
            http_json("POST", self.base + "/v1/learn/spam", body, auth, want=(200, 208))
            http_json("POST", self.base + "/v1/learn/ham", ham_message(i, tag), auth, want=(200, 208))
        # Some traffic for the status chart and the history.
        for i in range(3):
            http_json("POST", self.base + "/v1/check", ham_message(i, tag + "-check"))
        return "the model was seeded with 3 spam and 3 ham messages through /v1/learn, 3 ham checked"

    def a_wrong_token(self):
        d = self.driver
        d.get(self.base + "/ui/")
        wait_for(d, "the sign-in form", lambda: shown(d, "login-secret"))
        field = by_id(d, "login-secret")
        field.clear()
        field.send_keys("not-" + self.token)
        by_id(d, "login-submit").click()
        message = wait_for(d, "an error after a wrong token", lambda: shown(d, "login-error") and text_of(d, "login-error"))
        check(shown(d, "signin") and not shown(d, "tabs") and not shown(d, "signout"),
              "after a wrong token the page no longer shows only the sign-in form")
        session = http_json("GET", self.base + "/ui/api/session", headers={"Cookie": self.cookie_header()})
        check(session.get("signed_in") is False, f"a wrong token signed in: /ui/api/session says {session}")
        return f"a wrong token is refused ({message!r})"

    def b_sign_in(self):
        d = self.driver
        field = by_id(d, "login-secret")
        field.clear()
        field.send_keys(self.token)
        by_id(d, "login-submit").click()
        wait_for(d, "the status page after signing in",
                 lambda: shown(d, "signout") and shown(d, "page-status") and text_of(d, "stat-tokens").isdigit())
        check(not shown(d, "signin"), "the sign-in form is still shown after signing in")
        shot(d, self.shots, "status.png")
        return "signed in with the learn token; status.png"

    def c_status_numbers(self):
        d = self.driver
        stats = self.stats()
        d.refresh()
        want = {"stat-model-spam": stats["messages"]["spam"], "stat-model-ham": stats["messages"]["ham"],
                "stat-tokens": stats["tokens"]}
        def tiles():
            got = {k: text_of(d, k) for k in want}
            check(got == {k: str(v) for k, v in want.items()}, f"the tiles show {got}")
            return got

        wait_for(d, f"the model tiles to show {want}", tiles)

        def counters():
            shown_now = {k: text_of(d, k) for k in ("stat-checks", "stat-learns")}
            after = self.stats()  # read right after: they may move
            if shown_now == {"stat-checks": str(after["checks"]), "stat-learns": str(after["learns"])}:
                return shown_now
            by_id(d, "status-refresh").click()  # the retry
            raise Fail(f"the tiles show {shown_now}, /v1/stats checks={after['checks']} learns={after['learns']}")

        got = wait_for(d, "stat-checks/stat-learns to equal /v1/stats's checks/learns", counters)
        return f"status tiles match /v1/stats ({', '.join(f'{k}={v}' for k, v in {**want, **got}.items())})"

    def d_history(self):
        d = self.driver
        reply = http_json("POST", self.base + "/v1/check", self.raw)
        self.probability = float(reply["probability"])
        subject = expected_subject(self.raw)
        go(d, "history")
        by_id(d, "history-refresh").click()
        first = "#history-table tbody tr[data-id]"

        def newest_subject():
            row = d.find_element(By.CSS_SELECTOR, first)
            got = row.find_element(By.CSS_SELECTOR, ".c-subject").get_attribute("textContent")
            check(subject is None or squeeze(got) == squeeze(subject), f"the newest row's subject is {got!r}")
            return True

        wait_for(d, f"the newest history row to have the subject {subject!r}", newest_subject)
        row = d.find_element(By.CSS_SELECTOR, first)
        score = row.find_element(By.CSS_SELECTOR, ".c-score").get_attribute("textContent").strip()
        try:
            shown_p = float(score)
        except ValueError:
            raise Fail(f"the newest row's score {score!r} is not a number")
        check(abs(shown_p - self.probability) <= 0.0005 + 1e-9,
              f"the newest row shows score {score} but /v1/check said {self.probability}")
        ident = row.get_attribute("data-id")
        row.click()
        wait_for(d, "the detail panel", lambda: shown(d, "detail") and ident in text_of(d, "detail-title"))
        bars = wait_for(d, "the clues chart with at least one bar",
                        lambda: len(d.find_elements(By.CSS_SELECTOR, "#detail-clues svg rect.bar")))
        tokens = wait_for(d, "the clue tokens list",
                          lambda: [e.get_attribute("textContent") for e in
                                   d.find_elements(By.CSS_SELECTOR, "#detail-clues .clue-table tbody td.token-cell")])
        check(all(t.strip() for t in tokens), "a clue in the list has no token")
        check(len(tokens) == bars, f"the chart has {bars} bars but the list {len(tokens)} tokens")
        shot(d, self.shots, "history.png")
        return f"check {ident} is the newest row (subject and score {score} match); {bars} clues; history.png"

    def e_learn_button(self):
        d = self.driver
        before = self.stats()["messages"]["spam"]
        button = by_id(d, "learn-spam")
        def enabled():
            check(button.is_enabled(), f"#learn-spam is disabled (title {button.get_attribute('title')!r})")
            return True

        wait_for(d, "#learn-spam to be enabled", enabled)
        button.click()
        def learned():
            said = text_of(d, "learn-result")
            check(said.startswith("learned"), f"#learn-result says {said!r}")
            return said

        result = wait_for(d, "#learn-result to say learned", learned)
        after = self.stats()["messages"]["spam"]
        check(after == before + 1, f"/v1/stats messages.spam went from {before} to {after}, not up by one")
        return f"#learn-spam learned the check ({result!r}); model spam {before} -> {after}"

    def f_csrf(self):
        url = self.base + "/ui/api/learn?as=ham"
        base_headers = {"Cookie": self.cookie_header(), "Content-Type": "message/rfc822"}
        status, body = http("POST", url, self.raw, base_headers)
        check(status == 403, f"a POST with the session cookie but no X-CSRF-Token answered {status}: {body[:200]!r}")
        status, body = http("POST", url, self.raw, {**base_headers, "X-CSRF-Token": "0" * 64})
        check(status == 403, f"a POST with a wrong X-CSRF-Token answered {status}: {body[:200]!r}")
        return "POSTs with the session cookie but without or with a wrong X-CSRF-Token are refused (403)"

    def g_try_and_eval(self):
        d = self.driver
        go(d, "try")
        area = by_id(d, "try-text")
        d.execute_script("arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input'));",
                         area, self.raw.decode("utf-8", "replace"))
        by_id(d, "try-check").click()
        def verdict_shown():
            said = text_of(d, "try-verdict")
            check(said in ("spam", "ham", "unsure"), f"the verdict reads {said!r} (error: {text_of(d, 'try-error')!r})")
            return said

        verdict = wait_for(d, "a verdict", verdict_shown)
        bars = wait_for(d, "the try page's clues chart",
                        lambda: len(d.find_elements(By.CSS_SELECTOR, "#try-clues svg rect.bar")))
        shot(d, self.shots, "try.png")
        return f"try: verdict {verdict} with {bars} clues; try.png"

    def g2_eval_folder(self):
        d = self.driver
        go(d, "eval")
        wait_for(d, f"the folder {self.eval_folder!r} in the list",
                 lambda: self.eval_folder in [o.get_attribute("value") for o in
                                              d.find_elements(By.CSS_SELECTOR, "#eval-folder option")])
        d.execute_script("arguments[0].value = arguments[1];", by_id(d, "eval-folder"), self.eval_folder)
        by_id(d, "eval-run").click()

        def finished():
            line = text_of(d, "eval-status-line")
            check("failed" not in line, f"the status line reads {line!r} (error: {text_of(d, 'eval-error')!r})")
            check(shown(d, "eval-output"), f"no results yet: {line!r}")
            return line

        wait_for(d, "the evaluation's results", finished, EVAL_TIMEOUT)
        figures = text_of(d, "eval-figures")
        check("ROCA" in figures, f"the figures read {figures!r}")
        wait_for(d, "the ROC curve to load",
                 lambda: d.execute_script("const i = document.getElementById('eval-roc');"
                                          "return i.complete && i.naturalWidth > 0;"))
        shot(d, self.shots, "eval.png")
        return f"evaluated {self.eval_folder}: {squeeze(figures)[:120]}; eval.png"

    def h_phone(self):
        d = self.driver
        d.set_window_size(390, 844)
        go(d, "status")
        wait_for(d, "the status tiles", lambda: text_of(d, "stat-tokens").isdigit())
        width = d.execute_script("return [document.documentElement.scrollWidth, document.documentElement.clientWidth];")
        check(width[0] <= width[1] + 1, f"the status page is {width[0]} px wide in a {width[1]} px viewport")
        shot(d, self.shots, "phone.png", full=False)
        d.set_window_size(1280, 900)
        return f"390x844: no horizontal scrolling ({width[0]} px); phone.png"

    def i_sign_out(self):
        d = self.driver
        cookie = self.cookie_header()
        check(cookie, "the browser holds no cookie")
        by_id(d, "signout").click()
        wait_for(d, "the sign-in form after signing out",
                 lambda: shown(d, "signin") and shown(d, "login-secret") and not shown(d, "tabs"))
        status, body = http("GET", self.base + "/ui/api/status", headers={"Cookie": cookie})
        check(status == 401, f"GET /ui/api/status with the old cookie answered {status}: {body[:200]!r}")
        return "signed out: the sign-in form is back and the old cookie gets 401"

    def run(self):
        steps = [
            ("setup", self.seed),
            ("a", self.a_wrong_token), ("b", self.b_sign_in), ("c", self.c_status_numbers),
            ("d", self.d_history), ("e", self.e_learn_button), ("f", self.f_csrf),
            ("g", self.g_try_and_eval), ("g2", self.g2_eval_folder), ("h", self.h_phone), ("i", self.i_sign_out),
        ]
        os.makedirs(self.shots, exist_ok=True)
        step = "start"
        try:
            self.driver = start_browser()
            for step, fn in steps:
                said = fn()
                errors = console_errors(self.driver)
                check(not errors, "the page logged errors: " + " | ".join(errors))
                print(f"ok {step}: {said}", flush=True)
        except (Fail, WebDriverException, OSError, KeyError, ValueError) as e:
            detail = str(e).strip() or type(e).__name__
            print(f"console.py: step {step} failed: {detail}", file=sys.stderr)
            if self.driver is not None:
                try:
                    self.driver.save_screenshot(os.path.join(self.shots, "failure.png"))
                    print(f"  (screenshot: {os.path.join(self.shots, 'failure.png')}; page at {self.driver.current_url})",
                          file=sys.stderr)
                except WebDriverException:
                    pass
            return 1
        finally:
            if self.driver is not None:
                try:
                    self.driver.quit()
                except WebDriverException:
                    pass
        print("all steps passed")
        return 0


def main(argv):
    if len(argv) != 6:
        print("usage: console.py BASE_URL LEARN_TOKEN SPAM_EML SCREENSHOT_DIR EVAL_FOLDER", file=sys.stderr)
        return 2
    return Run(*argv[1:]).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
