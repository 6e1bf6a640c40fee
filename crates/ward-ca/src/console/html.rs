//! Building the console's HTML: escaping, the page frame, times and charts.
//!
//! Everything shown passes through [`esc`]; no page carries inline script
//! or style (the Content Security Policy forbids both), so the few dynamic
//! touches live in `assets/console.js` and the look in `assets/console.css`.

use std::fmt::Write as _;

use time::OffsetDateTime;
use time::macros::format_description;

/// Escapes text for HTML element content and double-quoted attributes.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
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

/// Percent-encodes a query or path component.
pub(crate) fn url_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `2026-12-07 14:06:57 UTC`.
pub(crate) fn utc(t: OffsetDateTime) -> String {
    let fmt = format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    t.to_offset(time::UtcOffset::UTC)
        .format(&fmt)
        .unwrap_or_default()
}

/// A time element: UTC in the text and on hover; the script rewrites the
/// text into the viewer's zone and keeps UTC in the title.
pub(crate) fn when(t: OffsetDateTime) -> String {
    let iso = ward_pki::issue::rfc3339(t);
    let shown = utc(t);
    format!(
        "<time datetime=\"{}\" title=\"{}\">{}</time>",
        esc(&iso),
        esc(&shown),
        esc(&shown)
    )
}

/// Which navigation entry a page belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    /// The overview.
    Overview,
    /// Certificates.
    Certificates,
    /// Tokens.
    Tokens,
    /// Audit.
    Audit,
    /// ACME accounts and orders.
    Acme,
    /// Pages outside the navigation (login, errors).
    None,
}

/// The frame of every page. `csrf` is the session's token for the logout
/// form (`None` when signed out).
pub(crate) fn page(title: &str, nav: Nav, csrf: Option<&str>, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 2048);
    out.push_str(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"referrer\" content=\"same-origin\">",
    );
    let _ = write!(out, "<title>{} · Ward CA</title>", esc(title));
    out.push_str(
        "<link rel=\"stylesheet\" href=\"/console/assets/console.css\">\
         <script src=\"/console/assets/console.js\" defer></script></head><body>\
         <a class=\"skip\" href=\"#main\">Skip to content</a><header><span class=\"brand\">Ward CA</span>",
    );
    if let Some(csrf) = csrf {
        out.push_str("<nav aria-label=\"Console\"><ul>");
        for (entry, href, label) in [
            (Nav::Overview, "/console/", "Overview"),
            (Nav::Certificates, "/console/certificates", "Certificates"),
            (Nav::Tokens, "/console/tokens", "Tokens"),
            (Nav::Audit, "/console/audit", "Audit"),
            (Nav::Acme, "/console/acme", "ACME"),
        ] {
            let current = if entry == nav {
                " aria-current=\"page\""
            } else {
                ""
            };
            let _ = write!(out, "<li><a href=\"{href}\"{current}>{label}</a></li>");
        }
        out.push_str("</ul></nav>");
        let _ = write!(
            out,
            "<form method=\"post\" action=\"/console/logout\" class=\"logout\">{}\
             <button type=\"submit\">Sign out</button></form>",
            csrf_field(csrf)
        );
    }
    let _ = writeln!(
        out,
        "</header><main id=\"main\" tabindex=\"-1\"><h1>{}</h1>{body}</main></body></html>",
        esc(title)
    );
    out
}

/// The hidden CSRF field every form of a signed-in page carries.
pub(crate) fn csrf_field(csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(csrf)
    )
}

/// A table in a horizontally scrolling wrapper (narrow screens).
pub(crate) fn table(caption: &str, head: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = String::from("<div class=\"scroll\" tabindex=\"0\"><table>");
    let _ = write!(out, "<caption>{}</caption><thead><tr>", esc(caption));
    for h in head {
        let _ = write!(out, "<th scope=\"col\">{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    if rows.is_empty() {
        let _ = write!(
            out,
            "<tr><td colspan=\"{}\" class=\"empty\">None.</td></tr>",
            head.len()
        );
    }
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            // Cells are HTML built by the caller from escaped parts.
            let _ = write!(out, "<td>{cell}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div>");
    out
}

/// A bar chart as inline SVG (no script needed): one bar per value, with a
/// text alternative listing the values for screen readers.
pub(crate) fn bar_chart(title: &str, labels: &[String], values: &[u64]) -> String {
    let max = values.iter().copied().max().unwrap_or(0).max(1);
    let n = values.len().max(1);
    let (width, height) = (600.0_f64, 120.0_f64);
    let bar = width / n as f64;
    let total: u64 = values.iter().sum();
    let mut out = String::new();
    let _ = write!(
        out,
        "<figure class=\"chart\"><figcaption>{} — {} in total, at most {} per bar</figcaption>\
         <svg viewBox=\"0 0 {width} {}\" role=\"img\" aria-label=\"{}\" preserveAspectRatio=\"none\">",
        esc(title),
        total,
        values.iter().copied().max().unwrap_or(0),
        height + 2.0,
        esc(title)
    );
    for (i, v) in values.iter().enumerate() {
        let h = (*v as f64 / max as f64) * height;
        let label = labels.get(i).map(String::as_str).unwrap_or("");
        let _ = write!(
            out,
            "<rect class=\"bar\" x=\"{:.2}\" y=\"{:.2}\" width=\"{:.2}\" height=\"{:.2}\"><title>{}: {v}</title></rect>",
            i as f64 * bar + bar * 0.1,
            height - h,
            bar * 0.8,
            h.max(if *v > 0 { 1.0 } else { 0.0 }),
            esc(label)
        );
    }
    let _ = write!(
        out,
        "<line class=\"axis\" x1=\"0\" y1=\"{height}\" x2=\"{width}\" y2=\"{height}\"></line></svg>"
    );
    // The values as text, for readers without the picture.
    out.push_str("<details><summary>Values</summary><ul class=\"values\">");
    for (label, v) in labels.iter().zip(values) {
        let _ = write!(out, "<li>{}: {v}</li>", esc(label));
    }
    out.push_str("</ul></details></figure>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(url_component("spiffe://a/b c"), "spiffe%3A%2F%2Fa%2Fb%20c");
    }

    #[test]
    fn times_carry_utc_for_hover_and_script() {
        let t = OffsetDateTime::from_unix_timestamp(0).unwrap();
        assert_eq!(
            when(t),
            "<time datetime=\"1970-01-01T00:00:00Z\" title=\"1970-01-01 00:00:00 UTC\">1970-01-01 00:00:00 UTC</time>"
        );
    }

    #[test]
    fn pages_have_no_inline_script_or_style() {
        let html = page(
            "T<",
            Nav::Overview,
            Some("c\""),
            &bar_chart("c", &["a".into()], &[3]),
        );
        assert!(!html.contains("<script>") && !html.contains("style="));
        assert!(html.contains("T&lt;") && html.contains("value=\"c&quot;\""));
        assert!(html.contains("aria-current=\"page\""));
    }
}
