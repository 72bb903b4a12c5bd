//! Submodules: `.gitmodules` read as git reads it (gix-config), and a
//! submodule's URL resolved against its parent's.

/// (path, url) of each submodule in a `.gitmodules` file, read by gix-config
/// as git reads it: quoted values and escapes, `;` and `#` comments, the
/// sections of one submodule's name merged, the last value winning. A
/// submodule without a path or a url is left out. `[include]` is not followed
/// (git does not either for `.gitmodules`), so a repo's file cannot name local ones.
pub fn parse_gitmodules(text: &[u8]) -> Result<Vec<(String, String)>, gix_config::file::init::Error> {
    let file = gix_config::File::from_bytes_no_includes(
        text,
        gix_config::file::Metadata::api(),
        gix_config::file::init::Options::default(),
    )?;
    // (name, path, url), in the order the names first appear.
    let mut modules: Vec<(String, Option<String>, Option<String>)> = Vec::new();
    for section in file.sections_by_name("submodule").into_iter().flatten() {
        let Some(name) = section.header().subsection_name() else {
            continue;
        };
        let name = name.to_string();
        let index = modules
            .iter()
            .position(|(known, ..)| *known == name)
            .unwrap_or_else(|| {
                modules.push((name, None, None));
                modules.len() - 1
            });
        if let Some(path) = section.value("path") {
            modules[index].1 = Some(path.to_string());
        }
        if let Some(url) = section.value("url") {
            modules[index].2 = Some(url.to_string());
        }
    }
    Ok(modules
        .into_iter()
        .filter_map(|(_, path, url)| Some((path?.trim_matches('/').to_string(), url?)))
        .collect())
}

/// A submodule URL, relative ones (`../theme.git`) resolved against the parent's.
pub fn resolve_url(parent: &str, url: &str) -> String {
    if !(url.starts_with("./") || url.starts_with("../")) {
        return url.to_string();
    }
    let mut base = parent.trim_end_matches('/').to_string();
    let mut rest = url;
    loop {
        if let Some(tail) = rest.strip_prefix("../") {
            if let Some(index) = base.rfind('/') {
                base.truncate(index);
            }
            rest = tail;
        } else if let Some(tail) = rest.strip_prefix("./") {
            rest = tail;
        } else {
            break;
        }
    }
    format!("{base}/{rest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gitmodules_and_relative_urls() {
        let text = b"[submodule \"themes/ananke\"]\n\tpath = themes/ananke\n\turl = ../ananke.git\n[submodule \"x\"]\n\tpath = x\n\turl = https://example.com/x.git\n";
        assert_eq!(
            parse_gitmodules(text).unwrap(),
            vec![
                ("themes/ananke".to_string(), "../ananke.git".to_string()),
                ("x".to_string(), "https://example.com/x.git".to_string())
            ]
        );
        assert_eq!(
            resolve_url("http://127.0.0.1:8480/git/site.git", "../ananke.git"),
            "http://127.0.0.1:8480/git/ananke.git"
        );
        assert_eq!(
            resolve_url("http://h/git/site.git/", "./sub.git"),
            "http://h/git/site.git/sub.git"
        );
        assert_eq!(
            resolve_url("http://h/a.git", "https://x/y.git"),
            "https://x/y.git"
        );
    }

    fn modules(text: &str) -> Vec<(String, String)> {
        parse_gitmodules(text.as_bytes()).unwrap()
    }

    fn pair(path: &str, url: &str) -> (String, String) {
        (path.to_string(), url.to_string())
    }

    #[test]
    fn gitmodules_values_are_unquoted_and_unescaped() {
        let text = "[submodule \"theme\"]\n\tpath = \"themes/my theme\"\n\turl = \"https://example.com/a;b#c.git\"\n\
                    [submodule \"docs\"]\n\tpath = docs/\n\turl = \"../say \\\"hi\\\".git\"\n";
        assert_eq!(
            modules(text),
            [
                pair("themes/my theme", "https://example.com/a;b#c.git"),
                pair("docs", "../say \"hi\".git")
            ]
        );
    }

    #[test]
    fn gitmodules_comments_are_not_values() {
        let text = "# a comment = not a key\n; url = https://wrong.example/\n\
                    [submodule \"theme\"] # trailing comment\n\
                    \t; path = commented/out\n\tpath = themes/ananke ; the theme\n\
                    \turl = ../ananke.git # relative\n\t# url = https://wrong.example/x.git\n";
        assert_eq!(modules(text), [pair("themes/ananke", "../ananke.git")]);
    }

    #[test]
    fn gitmodules_subsection_names_may_hold_quotes_and_one_name_is_one_submodule() {
        let text = "[submodule \"we\\\"ird \\\\ name\"]\n\tpath = a\n\turl = ../a.git\n\
                    [Submodule \"b\"]\n\tPath = b\n[submodule \"b\"]\n\tURL = ../old.git\n\turl = ../b.git\n";
        assert_eq!(modules(text), [pair("a", "../a.git"), pair("b", "../b.git")]);
    }

    #[test]
    fn gitmodules_without_a_url_or_a_name_are_left_out() {
        let text = "[submodule \"no-url\"]\n\tpath = vendor/x\n[submodule]\n\tpath = y\n\turl = ../y.git\n\
                    [core]\n\tpath = z\n\turl = ../z.git\n[submodule \"ok\"]\n\tpath = ok\n\turl = ../ok.git\n";
        assert_eq!(modules(text), [pair("ok", "../ok.git")]);
        assert!(parse_gitmodules(b"[submodule \"broken\"\n\tpath = x\n").is_err());
    }
}
