//! `GET /`: the status page for people, rendered on the server from the
//! same [`Snapshot`] as `GET /api/v1/sites`. Every text from outside (names,
//! commits, errors) is escaped; the page refreshes itself every 5 seconds.

use std::fmt::Write as _;

use crate::pipeline::realtime::state::{PreviewState, Run, SiteState, Snapshot};
use crate::reference;

/// `text` with HTML's special characters escaped, for element text and
/// quoted attribute values alike.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// The page.
pub fn render(snapshot: &Snapshot) -> String {
    let title = match &snapshot.environment {
        Some(environment) => format!("berth: {environment}"),
        None => "berth".to_string(),
    };
    let mut page = String::new();
    let _ = write!(
        page,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"refresh\" content=\"5\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>{}</h1>\n<p class=\"meta\">serving since {} &middot; {} pending &middot; \
         <a href=\"/api/v1/sites\">JSON</a> &middot; <a href=\"/metrics\">metrics</a></p>\n",
        escape(&title),
        escape(&title),
        escape(&snapshot.started_at),
        snapshot.queue_depth,
    );
    page.push_str(
        "<table>\n<thead><tr><th>Site</th><th>Serves</th><th>Last result</th><th>Now</th><th>History</th></tr></thead>\n<tbody>\n",
    );
    for site in &snapshot.sites {
        page.push_str(&row(site));
    }
    page.push_str("</tbody>\n</table>\n");
    if !snapshot.previews.is_empty() {
        page.push_str(
            "<h2>Previews</h2>\n<table>\n<thead><tr><th>Site</th><th>Pull request</th><th>Preview</th><th>Commit</th><th>Result</th></tr></thead>\n<tbody>\n",
        );
        for preview in &snapshot.previews {
            page.push_str(&preview_row(preview));
        }
        page.push_str("</tbody>\n</table>\n");
    }
    page.push_str("</body>\n</html>\n");
    page
}

fn preview_row(preview: &PreviewState) -> String {
    let link = preview.url.as_deref().map_or_else(
        || "&ndash;".to_string(),
        |url| {
            format!(
                "<a class=\"preview\" href=\"{}\">{}</a>",
                escape(url),
                escape(url)
            )
        },
    );
    let commit = preview.commit.as_deref().map_or_else(
        || "&ndash;".to_string(),
        |commit| format!("<code>{}</code>", escape(reference::short(commit))),
    );
    let error = preview
        .error
        .as_deref()
        .map(|error| format!("<div class=\"small failed\">{}</div>", escape(error)))
        .unwrap_or_default();
    format!(
        "<tr id=\"preview-{}-{}\"><td>{}</td><td>#{}</td><td>{link}</td><td>{commit}</td><td>{}{error}</td></tr>\n",
        escape(&preview.site),
        preview.number,
        escape(&preview.site),
        preview.number,
        escape(&preview.result)
    )
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;color:#222}\
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.4rem .6rem;border-bottom:1px solid #ddd;vertical-align:top}\
code{font-size:.9em}.meta{color:#666}.failed{color:#b00020}.deployed{color:#0a7d2c}.small{font-size:.85em;color:#555}\
details summary{cursor:pointer}";

fn row(site: &SiteState) -> String {
    let serves = match &site.deployed_commit {
        Some(commit) => {
            let short = escape(reference::short(commit));
            let commit = match &site.deployed_commit_url {
                Some(url) => format!("<a href=\"{}\"><code>{short}</code></a>", escape(url)),
                None => format!("<code>{short}</code>"),
            };
            let since = site
                .deployed_since
                .as_deref()
                .map(|since| format!("<div class=\"small\">since {}</div>", escape(since)))
                .unwrap_or_default();
            format!("{commit}{since}")
        }
        None => "&ndash;".to_string(),
    };
    let last = site.last.as_ref().map_or_else(|| "&ndash;".to_string(), run_text);
    let mut now = Vec::new();
    if let Some(running) = &site.running {
        now.push(format!(
            "shipping since {}{}",
            escape(&running.since),
            commits_text(&running.commits)
        ));
    }
    if site.pending {
        now.push(format!("pending{}", commits_text(&site.pending_commits)));
    }
    let now = if now.is_empty() {
        "idle".to_string()
    } else {
        now.join("<br>")
    };
    let history = if site.history.is_empty() {
        "&ndash;".to_string()
    } else {
        let mut items = String::new();
        for run in &site.history {
            let _ = write!(items, "<li>{} {}</li>", escape(&run.at), run_text(run));
        }
        format!(
            "<details><summary>{} runs</summary><ul>{items}</ul></details>",
            site.history.len()
        )
    };
    format!(
        "<tr id=\"site-{}\"><td><strong>{}</strong><div class=\"small\">{} {}</div></td><td>{serves}</td><td>{last}</td><td>{now}</td><td>{history}</td></tr>\n",
        escape(&site.site),
        escape(&site.site),
        escape(&site.repo),
        escape(&site.branch),
    )
}

/// A run in words: its result, its commit, and why it failed.
fn run_text(run: &Run) -> String {
    let class = match run.result.as_str() {
        "failed" | "interrupted" => "failed",
        "deployed" => "deployed",
        _ => "",
    };
    let commit = run
        .commit
        .as_deref()
        .map(|commit| format!(" <code>{}</code>", escape(reference::short(commit))))
        .unwrap_or_default();
    let error = run
        .error
        .as_deref()
        .map(|error| format!("<div class=\"small failed\">{}</div>", escape(error)))
        .unwrap_or_default();
    format!(
        "<span class=\"{class}\">{}</span>{commit} <span class=\"small\">({:.1}s)</span>{error}",
        escape(&run.result),
        run.seconds
    )
}

fn commits_text(commits: &[String]) -> String {
    if commits.is_empty() {
        return String::new();
    }
    let list: Vec<String> = commits
        .iter()
        .map(|commit| format!("<code>{}</code>", escape(reference::short(commit))))
        .collect();
    format!(" ({})", list.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_outside_is_escaped() {
        assert_eq!(
            escape("<script>\"a\" & 'b'</script>"),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
    }

    #[test]
    fn the_page_shows_each_site_what_it_serves_its_failure_and_what_is_pending() {
        let mut site = SiteState {
            site: "www<en>".into(),
            repo: "website".into(),
            branch: "main".into(),
            deployed_commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
            deployed_commit_url: Some("http://forge/o/r/commit/0123456789abcdef".into()),
            deployed_since: Some("2026-12-06T10:00:00Z".into()),
            pending: true,
            pending_commits: vec!["fedcba9876543210fedcba9876543210fedcba98".into()],
            ..SiteState::default()
        };
        site.last = Some(Run {
            at: "2026-12-06T10:05:00Z".into(),
            result: "failed".into(),
            commit: Some("1111111111111111111111111111111111111111".into()),
            image: None,
            error: Some("rollout failed: <pod> crashed".into()),
            seconds: 61.0,
        });
        site.history.push_front(site.last.clone().unwrap());
        let page = render(&Snapshot {
            schema: "berth.sites/v1",
            environment: Some("production".into()),
            started_at: "2026-12-06T09:00:00Z".into(),
            queue_depth: 1,
            sites: vec![site],
            previews: vec![PreviewState {
                site: "www".into(),
                number: 12,
                commit: Some("abcdef0123456789".into()),
                url: Some("http://10.96.0.9/".into()),
                result: "deployed".into(),
                error: None,
                at: "2026-12-06T10:06:00Z".into(),
            }],
        });
        assert!(page.contains("<title>berth: production</title>"), "{page}");
        assert!(page.contains("<strong>www&lt;en&gt;</strong>"), "{page}");
        assert!(
            page.contains(
                "<a href=\"http://forge/o/r/commit/0123456789abcdef\"><code>0123456789ab</code></a>"
            ),
            "{page}"
        );
        assert!(page.contains("since 2026-12-06T10:00:00Z"), "{page}");
        assert!(page.contains("rollout failed: &lt;pod&gt; crashed"), "{page}");
        assert!(page.contains("pending (<code>fedcba987654</code>)"), "{page}");
        assert!(page.contains("1 runs"), "{page}");
        assert!(!page.contains("<pod>"), "nothing from outside unescaped");
        assert!(
            page.contains("<a class=\"preview\" href=\"http://10.96.0.9/\">"),
            "{page}"
        );
        assert!(page.contains("<tr id=\"preview-www-12\">"), "{page}");
    }
}
