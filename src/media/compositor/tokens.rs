//! `{{…}}` tokens in overlay text. A template is parsed once, when the overlay is shown, into literal runs
//! and tokens, so that the frame path only has to ask "did the second (or a variable) change?" and, once a
//! second at most, render into a reused `String`. Tokens: `{{time}}` (HH:MM:SS), `{{date}}` (YYYY-MM-DD),
//! both read from the wall clock in the offset the caller gives, and `{{var:NAME}}` (OVERLAY_UPDATE values;
//! an unknown variable renders as nothing, so a lower third never shows a raw token to viewers). Anything
//! else between braces, and a `{{` that is never closed, is left exactly as written.

use std::collections::HashMap;
use std::fmt::Write as _;

use time::OffsetDateTime;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Lit(String),
    Time,
    Date,
    Var(String),
}

/// A parsed text template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Template {
    segments: Vec<Segment>,
}

/// The part of the wall clock a template's rendering depends on: comparing keys is how the frame path
/// decides, without formatting anything, that the text may have changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ClockKey {
    date: Option<time::Date>,
    hms: Option<(u8, u8, u8)>,
}

impl Template {
    pub(super) fn parse(template: &str) -> Template {
        let mut segments = Vec::new();
        let mut lit = String::new();
        let mut rest = template;
        while let Some(open) = rest.find("{{") {
            lit.push_str(&rest[..open]);
            let after = &rest[open + 2..];
            let Some(close) = after.find("}}") else {
                // Never closed: the rest is plain text.
                lit.push_str(&rest[open..]);
                rest = "";
                break;
            };
            let inner = &after[..close];
            if let Some(reopen) = inner.find("{{") {
                // `{{ a {{time}}`: the first opening was literal; retry from the second.
                lit.push_str(&rest[open..open + 2 + reopen]);
                rest = &after[reopen..];
                continue;
            }
            let token = match inner.trim() {
                "time" => Some(Segment::Time),
                "date" => Some(Segment::Date),
                t => t.strip_prefix("var:").map(|name| Segment::Var(name.trim().to_owned())),
            };
            match token {
                Some(token) => {
                    if !lit.is_empty() {
                        segments.push(Segment::Lit(std::mem::take(&mut lit)));
                    }
                    segments.push(token);
                }
                None => lit.push_str(&rest[open..open + 2 + close + 2]),
            }
            rest = &after[close + 2..];
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            segments.push(Segment::Lit(lit));
        }
        Template { segments }
    }

    pub(super) fn uses_var(&self, name: &str) -> bool {
        self.segments.iter().any(|s| matches!(s, Segment::Var(n) if n == name))
    }

    pub(super) fn clock_key(&self, wall: OffsetDateTime) -> ClockKey {
        let uses = |want: &Segment| self.segments.iter().any(|s| s == want);
        ClockKey {
            date: uses(&Segment::Date).then(|| wall.date()),
            hms: uses(&Segment::Time).then(|| (wall.hour(), wall.minute(), wall.second())),
        }
    }

    /// Renders into `out` (cleared first), reusing its capacity.
    pub(super) fn render_into(&self, out: &mut String, vars: &HashMap<String, String>, wall: OffsetDateTime) {
        out.clear();
        for segment in &self.segments {
            // Writing into a String cannot fail.
            let _ = match segment {
                Segment::Lit(s) => {
                    out.push_str(s);
                    Ok(())
                }
                Segment::Time => write!(out, "{:02}:{:02}:{:02}", wall.hour(), wall.minute(), wall.second()),
                Segment::Date => write!(out, "{:04}-{:02}-{:02}", wall.year(), u8::from(wall.month()), wall.day()),
                Segment::Var(name) => {
                    out.push_str(vars.get(name).map_or("", String::as_str));
                    Ok(())
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn render(t: &str, vars: &[(&str, &str)]) -> String {
        let vars = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut out = String::new();
        Template::parse(t).render_into(&mut out, &vars, datetime!(2024-03-07 09:05:03 -8));
        out
    }

    #[test]
    fn tokens_render() {
        assert_eq!(render("{{time}}", &[]), "09:05:03");
        assert_eq!(render("{{date}}", &[]), "2024-03-07");
        assert_eq!(render("Tide {{var:tide}} at {{ time }}", &[("tide", "1.2 m")]), "Tide 1.2 m at 09:05:03");
        assert_eq!(render("[{{var:nope}}]", &[("tide", "x")]), "[]");
        assert_eq!(render("no tokens", &[]), "no tokens");
        assert_eq!(render("", &[]), "");
    }

    #[test]
    fn malformed_and_unknown_tokens_are_left_as_written() {
        assert_eq!(render("{{weather}} ok", &[]), "{{weather}} ok");
        assert_eq!(render("open {{time", &[]), "open {{time");
        assert_eq!(render("{{", &[]), "{{");
        assert_eq!(render("}} {{}}", &[]), "}} {{}}");
        assert_eq!(render("a {{ b {{time}} c", &[]), "a {{ b 09:05:03 c");
        assert_eq!(render("{{var:x}}{{var:x}}", &[("x", "ab")]), "abab");
        assert_eq!(render("é {{date}} ✓", &[]), "é 2024-03-07 ✓");
    }

    #[test]
    fn clock_keys_change_only_with_what_is_shown() {
        let t = Template::parse("{{date}}");
        let a = datetime!(2024-03-07 09:05:03 UTC);
        assert_eq!(t.clock_key(a), t.clock_key(datetime!(2024-03-07 23:59:59 UTC)));
        assert_ne!(t.clock_key(a), t.clock_key(datetime!(2024-03-08 00:00:00 UTC)));
        let t = Template::parse("{{time}}");
        assert_ne!(t.clock_key(a), t.clock_key(datetime!(2024-03-07 09:05:04 UTC)));
        let plain = Template::parse("{{var:time}}");
        assert_eq!(plain.clock_key(a), plain.clock_key(datetime!(2030-01-01 00:00:00 UTC)));
        assert!(Template::parse("{{var:time}}").uses_var("time"));
    }
}
