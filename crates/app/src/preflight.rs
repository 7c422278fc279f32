//! Campaign pre-flight: what would make a campaign land in spam or break the
//! big mailbox providers' bulk-sender rules, said before the first message
//! goes out. `campaign send/start` print these warnings; with `--strict` any
//! warning refuses the start.

use rundbrief_core::Config;

/// Warnings for a campaign sent with `cfg`, the layout source `layout_html`
/// (`None`: the shipped default layout, which has an unsubscribe link) and
/// the `From:` value `from` (`news@example.org` or `Name <news@example.org>`).
/// Empty when nothing is wrong. Each warning says what to do.
///
/// Checks:
/// - DKIM is configured (`[dkim]`): unsigned bulk mail is rejected or
///   spam-foldered by the large providers.
/// - The From domain aligns with the DKIM domain (DMARC relaxed alignment),
///   by the rule of [`aligned`].
/// - The layout contains an unsubscribe link (`{{unsubscribe_url}}` or
///   `{{unsubscribe_mailto}}` inside a handlebars expression).
pub fn preflight(cfg: &Config, layout_html: Option<&str>, from: &str) -> Vec<String> {
    let mut warnings = Vec::new();
    let from_domain = match from_domain(from) {
        Ok(d) => Some(d),
        Err(e) => {
            warnings.push(format!(
                "{e}: {}",
                std::error::Error::source(&e)
                    .map(ToString::to_string)
                    .unwrap_or_default()
            ));
            None
        }
    };
    let keys = cfg.dkim.all_keys();
    if keys.is_empty() {
        warnings.push(
            "DKIM is not configured: Gmail, Yahoo and Microsoft reject or spam-folder unsigned \
             bulk mail. Run `rundbrief dkim keygen --out dkim.pem`, set [dkim] key_file, \
             selector and domain, and publish the record `rundbrief dns records` prints"
                .to_owned(),
        );
    } else if let Some(from_domain) = &from_domain
        && !keys.iter().any(|k| aligned(from_domain, &k.domain))
    {
        // One aligned signature is enough for DMARC.
        let dkim_domain = &keys[0].domain;
        warnings.push(format!(
            "the From domain {from_domain} does not align with the DKIM domain \
             {dkim_domain} (dkim.domain): DMARC ignores a signature of another domain. \
             Set dkim.domain to {from_domain} or a parent of it, or send from an \
             address @{dkim_domain}"
        ));
    }
    if let Some(w) = cfg.sending.postal_address_warning() {
        warnings.push(w);
    }
    if let Some(html) = layout_html
        && !has_unsubscribe_link(html)
    {
        warnings.push(
            "the layout has no unsubscribe link: add {{unsubscribe_url}} (e.g. \
             <a href=\"{{unsubscribe_url}}\">Unsubscribe</a>) to its footer. Bulk senders must \
             offer a visible unsubscribe link besides the List-Unsubscribe header"
                .to_owned(),
        );
    }
    warnings
}

/// The domain of a `From:` value, `news@example.org` or
/// `"Name" <news@example.org>`, lower-case.
///
/// # Errors
/// [`crate::ErrorKind::Invalid`]: it holds no usable address.
pub fn from_domain(from: &str) -> crate::Result<String> {
    use crate::ResultExt;
    Ok(rundbrief_core::mailbox_address(from)
        .with_context(|| format!("`sending.from` (`{from}`) has no usable address"))?
        .domain()
        .to_owned())
}

/// DMARC relaxed alignment, simplified: `a` and `b` align when they are
/// equal or one is a parent domain of the other (`example.org` and
/// `news.example.org`), compared case-insensitively.
///
/// DMARC proper compares organisational domains, which needs the public
/// suffix list: two siblings such as `mail.example.org` and `news.example.org`
/// also align, but this rule says they do not (a false warning, on the safe
/// side); a public suffix such as `co.uk` never appears as a signing domain,
/// so the rule does not wrongly accept one.
pub fn aligned(a: &str, b: &str) -> bool {
    let a = a.trim_end_matches('.').to_ascii_lowercase();
    let b = b.trim_end_matches('.').to_ascii_lowercase();
    let under = |child: &str, parent: &str| {
        child
            .strip_suffix(parent)
            .is_some_and(|rest| rest.ends_with('.'))
    };
    a == b || under(&a, &b) || under(&b, &a)
}

/// True when a handlebars expression in `html` names `unsubscribe_url` or
/// `unsubscribe_mailto` (`{{unsubscribe_url}}`, `{{{ unsubscribe_url }}}`,
/// `{{#if unsubscribe_url}}` …). Text outside `{{ }}` does not count.
fn has_unsubscribe_link(html: &str) -> bool {
    let mut rest = html;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            break;
        };
        let expr = &after[..close];
        if !expr.trim_start_matches('{').trim_start().starts_with('!')
            && (expr.contains("unsubscribe_url") || expr.contains("unsubscribe_mailto"))
        {
            return true;
        }
        rest = &after[close + 2..];
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn with_dkim(domain: &str) -> Config {
        let mut cfg = Config::default();
        cfg.sending.postal_address = Some("Example GmbH, Domstraße 1, 50667 Köln".into());
        cfg.dkim.key_file = Some(PathBuf::from("dkim.pem"));
        cfg.dkim.selector = Some("s1".into());
        cfg.dkim.domain = Some(domain.into());
        cfg
    }

    const WITH_LINK: &str = "<p>{{{content}}}</p><a href=\"{{unsubscribe_url}}\">Unsubscribe</a>";

    #[test]
    fn a_good_setup_has_no_warnings() {
        let cfg = with_dkim("example.org");
        for from in [
            "news@example.org",
            "News <news@mail.example.org>",
            "\"Rundbrief, News\" <NEWS@EXAMPLE.ORG>",
        ] {
            assert_eq!(
                preflight(&cfg, Some(WITH_LINK), from),
                Vec::<String>::new(),
                "{from}"
            );
        }
        // The shipped layout (None) has its link.
        assert!(preflight(&cfg, None, "news@example.org").is_empty());
        let shipped = include_str!("../../../templates/default/layout.html.hbs");
        assert!(preflight(&cfg, Some(shipped), "news@example.org").is_empty());
    }

    #[test]
    fn each_problem_is_one_warning_that_says_what_to_do() {
        let mut no_dkim = Config::default();
        no_dkim.sending.postal_address = Some("Example GmbH, Domstraße 1, 50667 Köln".into());
        let none = preflight(&no_dkim, Some(WITH_LINK), "news@example.org");
        assert_eq!(none.len(), 1, "{none:?}");
        assert!(
            none[0].contains("DKIM is not configured") && none[0].contains("dkim keygen"),
            "{none:?}"
        );

        let other = preflight(
            &with_dkim("example.com"),
            Some(WITH_LINK),
            "news@example.org",
        );
        assert_eq!(other.len(), 1, "{other:?}");
        assert!(
            other[0].contains("example.org") && other[0].contains("dkim.domain"),
            "{other:?}"
        );

        let no_link = preflight(
            &with_dkim("example.org"),
            Some("<p>{{{content}}}</p><p>unsubscribe_url</p>{{!-- unsubscribe_url --}}"),
            "news@example.org",
        );
        assert_eq!(no_link.len(), 1, "{no_link:?}");
        assert!(no_link[0].contains("{{unsubscribe_url}}"), "{no_link:?}");

        let all = preflight(&Config::default(), Some("{{{content}}}"), "Newsletter");
        assert_eq!(all.len(), 4, "{all:?}");
        assert!(all.iter().any(|w| w.contains("postal_address")), "{all:?}");
    }

    #[test]
    fn alignment_table() {
        for (from, dkim, want) in [
            ("example.org", "example.org", true),
            ("news.example.org", "example.org", true),
            ("a.b.example.org", "example.org", true),
            ("example.org", "mail.example.org", true),
            ("Example.ORG.", "example.org", true),
            ("example.org", "example.com", false),
            ("badexample.org", "example.org", false),
            ("example.org", "org.example", false),
            // Siblings align under DMARC; the simple rule warns (documented).
            ("news.example.org", "mail.example.org", false),
        ] {
            assert_eq!(aligned(from, dkim), want, "{from} vs {dkim}");
        }
    }

    #[test]
    fn unsubscribe_link_forms() {
        for (html, want) in [
            ("<a href=\"{{unsubscribe_url}}\">x</a>", true),
            ("<a href=\"{{{ unsubscribe_url }}}\">x</a>", true),
            (
                "{{#if unsubscribe_mailto}}<a href=\"{{unsubscribe_mailto}}\">x</a>{{/if}}",
                true,
            ),
            ("<p>unsubscribe_url</p>", false),
            ("{{! unsubscribe_url }}", false),
            ("{{unsubscribe_url", false),
            ("", false),
        ] {
            assert_eq!(has_unsubscribe_link(html), want, "{html}");
        }
    }
}
