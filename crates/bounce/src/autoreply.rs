//! RFC 3834 automatic replies (vacation, out of office): recognised so they are
//! ignored, never counted as bounces.

use mail_parser::Message;

use crate::header_text;
use crate::mime::View;

/// Subject fragments (lower-case) of automatic replies, in several languages.
const SUBJECTS: &[&str] = &[
    "out of office",
    "out-of-office",
    "out of the office",
    "automatic reply",
    "auto reply",
    "autoreply",
    "auto-reply",
    "auto response",
    "automatic response",
    "autosvar",
    "automatisk svar",
    "automaattinen vastaus",
    "resposta automática",
    "automatyczna odpowiedź",
    "autoresponse",
    "auto-response",
    "vacation",
    "on holiday",
    "on leave",
    "away from",
    "abwesenheit",
    "abwesend",
    "automatische antwort",
    "réponse automatique",
    "reponse automatique",
    "absence",
    "risposta automatica",
    "respuesta automática",
    "fuera de la oficina",
    "afwezig",
    "automatisch antwoord",
    "自動応答",
    "不在",
];

/// Returns the rule that recognised an automatic reply, if any.
pub(crate) fn detect(msg: &Message<'_>, view: &View) -> Option<&'static str> {
    if let Some(v) = header_text(msg, "auto-submitted")
        && v.trim().to_ascii_lowercase().starts_with("auto-replied")
    {
        return Some("auto-submitted-auto-replied");
    }
    for h in [
        "x-autoreply",
        "x-autorespond",
        "x-autoresponder",
        "x-autoreply-from",
    ] {
        if let Some(v) = header_text(msg, h) {
            let v = v.trim().to_ascii_lowercase();
            if v != "no" && v != "false" && v != "0" {
                return Some("x-autoreply-header");
            }
        }
    }
    if let Some(v) = header_text(msg, "precedence") {
        let v = v.trim().to_ascii_lowercase();
        if v == "auto_reply" || v == "auto-reply" {
            return Some("precedence-auto-reply");
        }
        if v == "junk" && header_text(msg, "list-id").is_none() {
            return Some("precedence-junk");
        }
    }
    if SUBJECTS.iter().any(|s| view.subject.contains(s)) {
        return Some("subject-auto-reply");
    }
    None
}
