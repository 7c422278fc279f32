//! The HTML pages: small, accessible, no JavaScript, every value escaped.
//!
//! Each page is one `<main>` with a heading, a sentence and at most one
//! form with one button. Forms post to a *relative* URL, so the endpoint
//! works under a path prefix behind a reverse proxy (`public_url =
//! "https://example.org/news"`).

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// `s` with the five HTML-special characters replaced, safe in text and in
/// quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One page. `title` and `body` are already escaped HTML.
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"robots\" content=\"noindex\">\n<title>{title}</title>\n<style>\n\
         body{{font-family:system-ui,sans-serif;line-height:1.5;margin:0;padding:2rem 1rem;color:#1a1a1a;background:#fff}}\n\
         main{{max-width:32rem;margin:0 auto}}\n\
         button{{font:inherit;font-size:1.1rem;padding:.6rem 1.4rem;border:2px solid #1a1a1a;border-radius:.3rem;background:#1a1a1a;color:#fff;cursor:pointer}}\n\
         button:focus{{outline:3px solid #2b6cb0;outline-offset:2px}}\n\
         .addr{{font-weight:bold;word-break:break-all}}\n\
         @media (prefers-color-scheme: dark){{body{{background:#111;color:#eee}}button{{background:#eee;color:#111;border-color:#eee}}}}\n\
         </style>\n</head>\n<body>\n<main>\n<h1>{title}</h1>\n{body}\n</main>\n</body>\n</html>\n"
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // The pages carry tokens in their URLs and state in their text.
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}

/// A form with one button posting to `action` (relative, already escaped
/// or safe: our tokens are base32).
fn button(action: &str, label: &str) -> String {
    format!(
        "<form method=\"post\" action=\"{}\">\n<input type=\"hidden\" name=\"confirm\" value=\"yes\">\n\
         <button type=\"submit\">{}</button>\n</form>",
        escape(action),
        escape(label)
    )
}

fn who(email: &str, list: &str) -> (String, String) {
    (
        format!("<span class=\"addr\">{}</span>", escape(email)),
        format!("<strong>{}</strong>", escape(list)),
    )
}

/// `GET /u/TOKEN`: asks before unsubscribing (link scanners only GET).
pub fn unsubscribe_ask(email: &str, list: &str, token: &str) -> Response {
    let (e, l) = who(email, list);
    page(
        StatusCode::OK,
        &format!("Unsubscribe from {}?", escape(list)),
        &format!(
            "<p>{e} will no longer receive mail from the list {l}.</p>\n{}",
            button(token, "Unsubscribe")
        ),
    )
}

/// After the unsubscribe (also the answer to a one-click POST). The
/// re-subscribe button is there only when it can work (`resubscribe` is
/// `None` for a subscriber the button cannot bring back).
pub fn unsubscribed(email: &str, list: &str, resubscribe: Option<&str>) -> Response {
    let (e, l) = who(email, list);
    let again = match resubscribe {
        Some(action) => format!(
            "<p>Unsubscribed by mistake? You can subscribe again:</p>\n{}",
            button(action, "Subscribe again")
        ),
        None => "<p>To receive mail again, subscribe with the list's subscription form and \
                 confirm the message sent to the address.</p>"
            .to_string(),
    };
    page(
        StatusCode::OK,
        "You are unsubscribed",
        &format!("<p>{e} will receive no more mail from the list {l}.</p>\n{again}"),
    )
}

/// `/r/TOKEN` for a subscriber the re-subscribe button cannot bring back
/// (`why` is [`rundbrief_store::NoWayBack`]): says why, and the only way
/// back, a fresh double opt-in. Nothing was changed. 403.
pub fn no_way_back(email: &str, list: &str, why: rundbrief_store::NoWayBack) -> Response {
    use rundbrief_store::NoWayBack;
    let (e, l) = who(email, list);
    let because = match why {
        NoWayBack::Bounced => {
            "mail to this address could not be delivered, so it was taken off \
                               every list"
        }
        NoWayBack::Complained => {
            "mail to this address was reported as spam, so it receives no \
                                  more mail from us"
        }
        NoWayBack::UnsubscribedEverywhere | NoWayBack::Blocklisted => {
            "this address was unsubscribed from every list"
        }
    };
    page(
        StatusCode::FORBIDDEN,
        "This link cannot subscribe you again",
        &format!(
            "<p>{e} was not subscribed to the list {l} again: {because}.</p>\n\
             <p>To receive mail again, subscribe with the list's subscription form. A message \
             with a confirmation link is then sent to the address; you are subscribed once you \
             have pressed the button behind that link. Nothing was changed.</p>"
        ),
    )
}

/// The token is valid but its subscriber or list is gone: nothing will be
/// sent to them, which is all the visitor needs to know.
pub fn not_on_list() -> Response {
    page(
        StatusCode::OK,
        "You are not on this list",
        "<p>This address receives no mail from this list.</p>",
    )
}

/// `GET /c/TOKEN` and `GET /r/TOKEN`: asks before subscribing.
pub fn subscribe_ask(email: &str, list: &str, action: &str, again: bool) -> Response {
    let (e, l) = who(email, list);
    page(
        StatusCode::OK,
        if again {
            "Subscribe again?"
        } else {
            "Confirm your subscription"
        },
        &format!(
            "<p>Press the button to subscribe {e} to the list {l}.</p>\n{}",
            button(action, "Yes, subscribe me")
        ),
    )
}

/// After a confirmation or re-subscribe.
pub fn subscribed(email: &str, list: &str) -> Response {
    let (e, l) = who(email, list);
    page(
        StatusCode::OK,
        "You are subscribed",
        &format!("<p>{e} is subscribed to the list {l}. Thank you!</p>"),
    )
}

/// The answer to every accepted `POST /s/LIST`, whatever the address's
/// state: it must not tell whether the address is known.
pub fn check_inbox() -> Response {
    page(
        StatusCode::OK,
        "Check your inbox",
        "<p>If the address can be subscribed, a message with a confirmation link is on its way \
         to it. You are subscribed once you have pressed the button behind that link.</p>\n\
         <p>No message? Look in the spam folder, or try again later.</p>",
    )
}

/// A forged, altered or unknown link, or a list that does not exist.
pub fn not_found() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "This link is not valid",
        "<p>The link may have been cut off or altered. Please use the complete link from the \
         message you received.</p>",
    )
}

/// A form that cannot be used.
pub fn bad_request(why: &str) -> Response {
    page(
        StatusCode::BAD_REQUEST,
        "Please check the form",
        &format!("<p>{}</p>", escape(why)),
    )
}

/// Over a rate limit.
pub fn too_many(retry_after_secs: u64) -> Response {
    let mut r = page(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many requests",
        "<p>Too many requests came from your network. Please try again later.</p>",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, retry_after_secs.max(1).into());
    r
}

/// Our side failed (the database); the visitor may retry.
pub fn unavailable() -> Response {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Please try again later",
        "<p>This page cannot be shown right now. Nothing was changed. Please try again in a few \
         minutes.</p>",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_text_and_attributes() {
        for (input, want) in [
            ("plain", "plain"),
            (
                "<script>alert('x')</script>",
                "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;",
            ),
            ("a\"b&c", "a&quot;b&amp;c"),
            ("Zoë", "Zoë"),
        ] {
            assert_eq!(escape(input), want);
        }
    }
}
