//! What a pull request changed in a site, page by page, and the comment
//! berth keeps on the pull request: pure functions, tested below.
//!
//! The pages that changed are found by comparing the site's files as the pull
//! request's head builds them with the files its base branch builds (each
//! file's Git blob id, the same inputs `run` decides "same files" by). The
//! preview's own image is not compared: its generator was told the preview's
//! address, which changes every page that names its own URL.

use std::collections::{BTreeSet, HashMap};

/// How a file changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Change {
    Added,
    Changed,
    Removed,
}

/// A page the pull request changed, and its address in the preview (none
/// for a removed one).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChangedPage {
    /// Below the site's root, `/`-separated, as the browser asks for it.
    pub path: String,
    pub change: Change,
    pub url: Option<String>,
}

/// The files that differ between `base` and `head` (path → blob), the pages
/// first (`.html`, then the others), each in path order.
pub fn changed_pages<H: std::hash::BuildHasher>(
    base: &HashMap<String, git2::Oid, H>,
    head: &HashMap<String, git2::Oid, H>,
    preview_url: &str,
) -> Vec<ChangedPage> {
    let paths: BTreeSet<&String> = base.keys().chain(head.keys()).collect();
    let mut pages: Vec<ChangedPage> = paths
        .into_iter()
        .filter_map(|path| {
            let change = match (base.get(path), head.get(path)) {
                (None, Some(_)) => Change::Added,
                (Some(_), None) => Change::Removed,
                (Some(a), Some(b)) if a != b => Change::Changed,
                _ => return None,
            };
            let path = format!("/{}", path.trim_start_matches('/'));
            let url = (change != Change::Removed)
                .then(|| format!("{}{}", preview_url.trim_end_matches('/'), page_address(&path)));
            Some(ChangedPage { path, change, url })
        })
        .collect();
    pages.sort_by_key(|page| (!is_page(&page.path), page.path.clone()));
    pages
}

/// A page's address: `/posts/a/index.html` is `/posts/a/`.
fn page_address(path: &str) -> String {
    path.strip_suffix("index.html")
        .map_or_else(|| path.to_string(), str::to_string)
}

fn is_page(path: &str) -> bool {
    std::path::Path::new(path).extension().is_some_and(|extension| {
        extension.eq_ignore_ascii_case("html") || extension.eq_ignore_ascii_case("htm")
    })
}

/// The marker that finds berth's comment of `site` on a pull request.
pub fn marker(site: &str) -> String {
    format!("<!-- berth-preview:{site} -->")
}

/// How many changed files the comment lists before it says "and N more".
const LISTED: usize = 30;

/// What the comment says of a preview that serves.
pub struct Serving<'a> {
    pub site: &'a str,
    pub url: &'a str,
    pub commit: &'a str,
    /// berth's verification of what is served, in its words.
    pub verification: &'a str,
    pub pages: &'a [ChangedPage],
    /// When it expires unless pushed to again (RFC 3339).
    pub expires: &'a str,
}

/// The comment of a preview that serves.
pub fn serving_comment(serving: &Serving<'_>) -> String {
    let mut text = format!(
        "{}\n### berth preview of `{}`\n\n**{}**\n\n| | |\n|---|---|\n| commit | `{}` |\n| verification | {} |\n| expires | {} (each push renews it) |\n",
        marker(serving.site),
        serving.site,
        serving.url,
        short(serving.commit),
        serving.verification.replace('|', "\\|").replace('\n', " "),
        serving.expires
    );
    let pages: Vec<&ChangedPage> = serving.pages.iter().filter(|page| is_page(&page.path)).collect();
    let others = serving.pages.len() - pages.len();
    if pages.is_empty() {
        text.push_str("\nNo page changed");
    } else {
        text.push_str(&format!("\nPages that changed ({}):\n", pages.len()));
        for page in pages.iter().take(LISTED) {
            let word = match page.change {
                Change::Added => " (new)",
                Change::Changed => "",
                Change::Removed => " (removed)",
            };
            match &page.url {
                Some(url) => text.push_str(&format!("- [{}]({url}){word}\n", page.path)),
                None => text.push_str(&format!("- {}{word}\n", page.path)),
            }
        }
        if pages.len() > LISTED {
            text.push_str(&format!("- and {} more\n", pages.len() - LISTED));
        }
    }
    if others > 0 {
        text.push_str(&format!(
            "{}{others} other file{} changed (styles, images, scripts).\n",
            if pages.is_empty() { "; " } else { "\n" },
            if others == 1 { "" } else { "s" }
        ));
    } else if pages.is_empty() {
        text.push_str(".\n");
    }
    text
}

/// The comment of a preview that is gone, and why.
pub fn gone_comment(site: &str, why: &str) -> String {
    format!(
        "{}\n### berth preview of `{site}`\n\nGone: {why}. Its images are left to `berth gc`.\n",
        marker(site)
    )
}

/// The comment of a pull request berth did not build a preview of, and why.
pub fn not_built_comment(site: &str, why: &str) -> String {
    format!(
        "{}\n### berth preview of `{site}`\n\nNot built: {why}.\n",
        marker(site)
    )
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(text: &str) -> git2::Oid {
        git2::Oid::hash_object(git2::ObjectType::Blob, text.as_bytes()).unwrap()
    }

    fn files(pairs: &[(&str, &str)]) -> HashMap<String, git2::Oid> {
        pairs
            .iter()
            .map(|(path, text)| ((*path).to_string(), blob(text)))
            .collect()
    }

    #[test]
    fn added_changed_and_removed_files_are_listed_pages_first_with_their_preview_address() {
        let base = files(&[
            ("index.html", "home"),
            ("posts/a/index.html", "a"),
            ("old.html", "old"),
            ("style.css", "red"),
            ("same.html", "same"),
        ]);
        let head = files(&[
            ("index.html", "home, better"),
            ("posts/a/index.html", "a"),
            ("posts/b/index.html", "b"),
            ("style.css", "blue"),
            ("same.html", "same"),
        ]);
        let pages = changed_pages(&base, &head, "http://10.96.0.9/");
        let listed: Vec<(&str, Change, Option<&str>)> = pages
            .iter()
            .map(|page| (page.path.as_str(), page.change, page.url.as_deref()))
            .collect();
        assert_eq!(
            listed,
            [
                ("/index.html", Change::Changed, Some("http://10.96.0.9/")),
                ("/old.html", Change::Removed, None),
                (
                    "/posts/b/index.html",
                    Change::Added,
                    Some("http://10.96.0.9/posts/b/")
                ),
                ("/style.css", Change::Changed, Some("http://10.96.0.9/style.css")),
            ]
        );
        assert!(changed_pages(&base, &base, "http://x").is_empty());
    }

    #[test]
    fn the_comment_names_the_address_commit_verification_pages_and_expiry_behind_its_marker() {
        let pages = vec![
            ChangedPage {
                path: "/posts/b/index.html".into(),
                change: Change::Added,
                url: Some("http://10.96.0.9/posts/b/".into()),
            },
            ChangedPage {
                path: "/old.html".into(),
                change: Change::Removed,
                url: None,
            },
            ChangedPage {
                path: "/style.css".into(),
                change: Change::Changed,
                url: Some("http://10.96.0.9/style.css".into()),
            },
        ];
        let comment = serving_comment(&Serving {
            site: "www",
            url: "http://10.96.0.9/",
            commit: "0123456789abcdef0123",
            verification: "1 ready pod runs sha256:aaaa; Service www-pr-3 answered 200 on /",
            pages: &pages,
            expires: "2026-12-13T10:00:00Z",
        });
        assert!(comment.starts_with("<!-- berth-preview:www -->\n"), "{comment}");
        assert!(comment.contains("**http://10.96.0.9/**"), "{comment}");
        assert!(comment.contains("| commit | `0123456789ab` |"), "{comment}");
        assert!(comment.contains("answered 200 on /"), "{comment}");
        assert!(comment.contains("Pages that changed (2):"), "{comment}");
        assert!(
            comment.contains("- [/posts/b/index.html](http://10.96.0.9/posts/b/) (new)"),
            "{comment}"
        );
        assert!(comment.contains("- /old.html (removed)"), "{comment}");
        assert!(comment.contains("1 other file changed"), "{comment}");
        assert!(comment.contains("2026-12-13T10:00:00Z"), "{comment}");
        let gone = gone_comment("www", "the pull request was merged");
        assert!(gone.starts_with(&marker("www")) && gone.contains("Gone: the pull request was merged."));
    }
}
