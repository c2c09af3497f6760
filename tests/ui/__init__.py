"""Browser tests of the web page (issue 16): Debian's chromium driven by Selenium against real registries."""
