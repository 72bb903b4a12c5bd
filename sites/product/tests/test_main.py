import os
import tempfile
import unittest

from lantern.main import check_site, is_local


def write(root, name, text):
    path = os.path.join(root, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


class CheckSiteTest(unittest.TestCase):
    def test_clean_site(self):
        with tempfile.TemporaryDirectory() as root:
            write(root, "index.html", '<title>Home</title><a href="about.html">About</a>')
            write(root, "about.html", '<title>About</title><a href="./">Home</a>')
            self.assertEqual(check_site(root), [])

    def test_broken_link_and_missing_title(self):
        with tempfile.TemporaryDirectory() as root:
            write(root, "index.html", '<a href="nowhere.html">?</a>')
            self.assertEqual(
                check_site(root),
                ["index.html: no <title>", "index.html: broken link nowhere.html"],
            )

    def test_is_local(self):
        self.assertTrue(is_local("style.css"))
        self.assertFalse(is_local("https://example.test/"))
        self.assertFalse(is_local("#top"))


if __name__ == "__main__":
    unittest.main()
