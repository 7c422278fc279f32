//! Layouts: the HTML (and optional text) frame around a campaign's content.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::RenderError;
use crate::mustache;

/// How deep `{{> partial}}` may nest before we assume a loop.
pub const MAX_PARTIAL_DEPTH: usize = 8;

/// A layout: an HTML template with one `{{{content}}}` slot, an optional text
/// template with the same slot, and named partials both may include with
/// `{{> name}}`. Loaded once per campaign; nothing is read per recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Shown in errors (`default`, or the directory).
    pub name: String,
    /// The HTML layout source.
    pub html: String,
    /// The text layout source; without one the text part is derived from the HTML.
    pub text: Option<String>,
    /// Partials by name.
    pub partials: BTreeMap<String, String>,
}

impl Layout {
    /// The layout shipped in `templates/default/`: responsive, single column,
    /// with an HTML and a text version and a footer carrying the unsubscribe link.
    #[must_use]
    pub fn shipped() -> Layout {
        Layout {
            name: "default".into(),
            html: include_str!("../../../templates/default/layout.html.hbs").into(),
            text: Some(include_str!("../../../templates/default/layout.txt.hbs").into()),
            partials: BTreeMap::new(),
        }
    }

    /// A layout from sources in memory, without a text version or partials.
    #[must_use]
    pub fn from_html(name: impl Into<String>, html: impl Into<String>) -> Layout {
        Layout {
            name: name.into(),
            html: html.into(),
            text: None,
            partials: BTreeMap::new(),
        }
    }

    /// Load an operator's layout directory:
    ///
    /// ```text
    /// DIR/layout.html.hbs      required
    /// DIR/layout.txt.hbs       optional text version
    /// DIR/partials/NAME.hbs    optional partials, included as {{> NAME}}
    /// ```
    ///
    /// # Errors
    /// [`RenderError::LayoutIo`] naming the file that could not be read.
    pub fn from_dir(dir: &Path) -> Result<Layout, RenderError> {
        let read = |p: PathBuf| {
            std::fs::read_to_string(&p).map_err(|source| RenderError::LayoutIo { path: p, source })
        };
        let html = read(dir.join("layout.html.hbs"))?;
        let text_path = dir.join("layout.txt.hbs");
        let text = if text_path.exists() {
            Some(read(text_path)?)
        } else {
            None
        };
        let mut partials = BTreeMap::new();
        let pdir = dir.join("partials");
        if pdir.is_dir() {
            let entries = std::fs::read_dir(&pdir).map_err(|source| RenderError::LayoutIo {
                path: pdir.clone(),
                source,
            })?;
            for entry in entries {
                let entry = entry.map_err(|source| RenderError::LayoutIo {
                    path: pdir.clone(),
                    source,
                })?;
                let path = entry.path();
                let Some(name) = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".hbs"))
                else {
                    continue;
                };
                let name = name.to_owned();
                partials.insert(name, read(path)?);
            }
        }
        Ok(Layout {
            name: dir.display().to_string(),
            html,
            text,
            partials,
        })
    }

    /// Add a text version.
    #[must_use]
    pub fn with_text(mut self, text: impl Into<String>) -> Layout {
        self.text = Some(text.into());
        self
    }

    /// Add a partial.
    #[must_use]
    pub fn with_partial(mut self, name: impl Into<String>, source: impl Into<String>) -> Layout {
        self.partials.insert(name.into(), source.into());
        self
    }
}

/// Replace every bare `{{> name}}` whose partial we have with the partial's
/// source, so that CSS inlining sees (and styles) what partials produce.
/// Partials with arguments are left to handlebars.
pub(crate) fn splice_partials(
    src: &str,
    partials: &BTreeMap<String, String>,
    depth: usize,
) -> Result<String, RenderError> {
    let mut out = String::with_capacity(src.len());
    let mut last = 0;
    for sp in mustache::spans(src) {
        let expr = &src[sp.start..sp.end];
        let name = expr
            .strip_prefix("{{>")
            .and_then(|s| s.strip_suffix("}}"))
            .map(str::trim)
            .filter(|n| !n.is_empty() && !n.contains(char::is_whitespace));
        let Some((name, body)) = name.and_then(|n| partials.get_key_value(n)) else {
            continue;
        };
        if depth >= MAX_PARTIAL_DEPTH {
            return Err(RenderError::PartialDepth {
                name: name.clone(),
                max: MAX_PARTIAL_DEPTH,
            });
        }
        out.push_str(&src[last..sp.start]);
        out.push_str(&splice_partials(body, partials, depth + 1)?);
        last = sp.end;
    }
    out.push_str(&src[last..]);
    Ok(out)
}

/// Put `content` into the layout's single `{{{content}}}` slot.
pub(crate) fn fill_slot(
    template: &str,
    layout: &str,
    content: &str,
) -> Result<String, RenderError> {
    let slots: Vec<_> = mustache::spans(layout)
        .into_iter()
        .filter(|sp| {
            let e = &layout[sp.start..sp.end];
            e.strip_prefix("{{{")
                .and_then(|s| s.strip_suffix("}}}"))
                .is_some_and(|s| s.trim() == "content")
        })
        .collect();
    match slots.as_slice() {
        [sp] => {
            let mut out = String::with_capacity(layout.len() + content.len());
            out.push_str(&layout[..sp.start]);
            out.push_str(content);
            out.push_str(&layout[sp.end..]);
            Ok(out)
        }
        _ => Err(RenderError::ContentSlot {
            template: template.to_owned(),
            found: slots.len(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partials_are_spliced_and_loops_stopped() {
        let mut p = BTreeMap::new();
        p.insert("a".to_owned(), "[{{> b}}]".to_owned());
        p.insert("b".to_owned(), "B{{x}}".to_owned());
        p.insert("me".to_owned(), "{{> me}}".to_owned());
        assert_eq!(
            splice_partials("<{{> a}}> {{> other}} {{> b y=1}}", &p, 0)
                .ok()
                .as_deref(),
            Some("<[B{{x}}]> {{> other}} {{> b y=1}}")
        );
        assert!(matches!(
            splice_partials("{{> me}}", &p, 0),
            Err(RenderError::PartialDepth { .. })
        ));
    }

    #[test]
    fn content_slot_must_be_unique() {
        assert_eq!(
            fill_slot("l", "<b>{{{ content }}}</b>", "X")
                .ok()
                .as_deref(),
            Some("<b>X</b>")
        );
        for bad in ["<b></b>", "{{{content}}}{{{content}}}", "{{content}}"] {
            assert!(
                matches!(
                    fill_slot("l", bad, "X"),
                    Err(RenderError::ContentSlot { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn shipped_layout_has_both_slots() {
        let l = Layout::shipped();
        assert!(fill_slot("html", &l.html, "").is_ok());
        assert!(fill_slot("text", l.text.as_deref().unwrap_or_default(), "").is_ok());
    }
}
