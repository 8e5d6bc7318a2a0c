"""The console in a real browser (Debian's Chromium, driven by Playwright).

Run by tests/console.rs with: BASE (the server), ACME_KEY (acme's user key),
BETA_KEY (beta's admin key), PANEL_KEY, ACME_USAGE and BETA_USAGE (what
`ledger usage --json` printed), ACME_NOTIFICATIONS (what
/v1/tenants/acme/notifications answered once acme's threshold crossing was
delivered), and optionally SCREENSHOT (a PNG path).
Exits non-zero, with the reason, on the first check that fails.
"""
import json
import os

from playwright.sync_api import expect, sync_playwright

BASE = os.environ["BASE"]
ACME = json.loads(os.environ["ACME_USAGE"])
BETA = json.loads(os.environ["BETA_USAGE"])
NOTIFICATIONS = json.loads(os.environ["ACME_NOTIFICATIONS"])
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def sign_in(page, key):
    page.get_by_test_id("key").fill(key)
    page.get_by_test_id("signin").click()


def sign_out(page):
    page.get_by_test_id("signout").click()
    expect(page.get_by_test_id("login")).to_be_visible()


def check_notifications(page, answer):
    """The tenant's alert thresholds, and its newest notification (a
    threshold crossing) with what it says and where it was delivered."""
    percents = lambda values: ", ".join(f"{v}%" for v in values) or "none"
    expect(page.get_by_test_id("tokens-alerts")).to_have_text(percents(answer["alerts"]["tokens"]))
    expect(page.get_by_test_id("storage-alerts")).to_have_text(percents(answer["alerts"]["storage"]))
    rows = page.get_by_test_id("notification")
    expect(rows).to_have_count(len(answer["notifications"]))
    newest, data = answer["notifications"][0], answer["notifications"][0]["data"]
    row = rows.first
    expect(row).to_have_attribute("data-type", "usage.threshold_crossed")
    expect(row.get_by_test_id("summary")).to_have_text(
        f"{data['meter']} reached {data['threshold']}%: {data['used']:,} of {data['limit']:,}")
    delivery = newest["deliveries"][0]
    badge = row.get_by_test_id("delivery")
    expect(badge).to_have_count(1)
    expect(badge).to_have_attribute("data-outcome", "delivered")
    expect(badge).to_have_text(f"{delivery['endpoint']}: delivered ({delivery['status']})")


def check_usage(page, usage):
    expect(page.get_by_test_id("tenant-title")).to_have_text(usage["tenant"])
    storage = usage["storage"]
    expect(page.get_by_test_id("storage-bytes")).to_have_text(
        f"{storage['used_bytes']:,} of {storage['quota_bytes']:,} bytes")
    tokens = usage["tokens"]
    expect(page.get_by_test_id("tokens-exact")).to_have_text(f"{tokens['used']} used, limit {tokens['limit']}")
    expect(page.get_by_test_id("tenant-meta")).to_contain_text(f"Plan {usage['plan']}")
    for addon in usage["addons"]:
        expect(page.get_by_test_id("addon-rows")).to_contain_text(addon["purchase"])


with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
    # A phone-width screen: the page must fit it.
    page = browser.new_page(viewport={"width": 390, "height": 844})
    # Under the server's Content-Security-Policy the page must run without a
    # violation (Chromium reports each as a console error), and load nothing
    # that is not there (a /favicon.ico the page did not declare, say). The
    # 401 and 403 the checks below provoke are reported as failed loads too:
    # answers are judged by their status instead.
    problems = []
    page.on("console", lambda m: m.type == "error" and not m.text.startswith("Failed to load resource")
            and problems.append(f"console: {m.text}"))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))
    page.on("response", lambda r: r.status == 404 and problems.append(f"404: {r.url}"))
    page.goto(BASE + "/")
    expect(page.get_by_test_id("login")).to_be_visible()

    # A wrong key is refused.
    sign_in(page, "lk_000000000000_00000000000000000000000000000000")
    expect(page.get_by_test_id("login-error")).to_contain_text("unknown or revoked")

    # acme's user key: acme's figures, exactly what `ledger usage --json` printed.
    sign_in(page, os.environ["ACME_KEY"])
    check_usage(page, ACME)
    check_notifications(page, NOTIFICATIONS)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390, "the page overflows a phone's width"
    expect(page.get_by_test_id("invoice-rows").locator("tr")).to_have_count(1)
    # Open an invoice line's explanation: its arithmetic and its events.
    line = page.locator("[data-testid^=line-]").first
    code = line.get_attribute("data-testid")[len("line-"):]
    explain = page.get_by_test_id("explain-" + code)
    expect(explain).to_be_hidden()
    line.click()
    expect(explain).to_be_visible()
    expect(explain).to_contain_text("How:")
    events = explain.get_by_test_id("event")
    assert events.count() >= 1, "an explained line lists the events behind it"
    expect(events.first).to_contain_text("subscribed")
    if os.environ.get("SCREENSHOT"):
        page.screenshot(path=os.environ["SCREENSHOT"], full_page=True)
    # The page's key cannot read another tenant, even by hand.
    status = page.evaluate("""async () => (await fetch('/v1/tenants/beta/usage',
        {headers: {Authorization: 'Bearer ' + sessionStorage.getItem('ledger-key')}})).status""")
    assert status == 403, f"acme's key read beta's usage: {status}"
    sign_out(page)

    # beta's key: only beta.
    sign_in(page, os.environ["BETA_KEY"])
    check_usage(page, BETA)
    body = page.locator("body").inner_text()
    assert "acme" not in body, "beta's console shows acme"
    # beta's own notification (its subscription), which no endpoint receives.
    expect(page.get_by_test_id("notification")).to_have_count(1)
    expect(page.get_by_test_id("notification").first).to_have_attribute("data-type", "subscription.changed")
    expect(page.get_by_test_id("delivery")).to_have_count(0)
    expect(page.get_by_test_id("back")).to_be_hidden()
    sign_out(page)

    # The panel: every tenant, then one of them.
    sign_in(page, os.environ["PANEL_KEY"])
    rows = page.get_by_test_id("tenant-rows").locator("tr")
    expect(rows).to_have_count(2)
    expect(page.locator("tr[data-tenant=acme]")).to_contain_text(ACME["plan"])
    expect(page.locator("tr[data-tenant=beta]")).to_contain_text(f"{BETA['tokens']['used']:,} / {BETA['tokens']['limit']:,}")
    page.locator("tr[data-tenant=acme]").click()
    check_usage(page, ACME)
    page.get_by_test_id("back").click()
    expect(rows).to_have_count(2)
    assert not problems, f"the console under its policy: {problems}"

    # The policy is in force: an inline script it does not name never runs.
    with page.expect_console_message(lambda m: "Content Security Policy" in m.text):
        page.evaluate("""() => { const s = document.createElement('script');
            s.textContent = 'window.injected = true'; document.head.append(s); }""")
    assert page.evaluate("window.injected === undefined"), "an inline script outside the policy ran"
    browser.close()
print("console checks passed")
