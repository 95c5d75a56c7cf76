//! How figures read on a page: sizes, percentages, times, and the links of a paginated list.

use std::fmt::Write as _;

/// `1.5 GiB`, `730 B`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if value < 10.0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

/// `42 %`, or a dash when there is no figure.
pub fn percent(p: Option<f64>) -> String {
    match p {
        Some(p) if p.is_finite() => format!("{p:.0} %"),
        _ => "—".to_owned(),
    }
}

/// `12 s ago`, `5 min ago`, `3 h ago`, `2 d ago`; `never` without a time.
pub fn relative(now: i64, then: Option<i64>) -> String {
    let Some(then) = then else {
        return "never".to_owned();
    };
    let ago = now.saturating_sub(then);
    if ago < 0 {
        return "just now".to_owned();
    }
    match ago {
        0..60 => format!("{ago} s ago"),
        60..3600 => format!("{} min ago", ago / 60),
        3600..86_400 => format!("{} h ago", ago / 3600),
        _ => format!("{} d ago", ago / 86_400),
    }
}

/// `2026-11-21 22:52 UTC` from unix seconds.
pub fn datetime(unix: i64) -> String {
    match jiff::Timestamp::from_second(unix) {
        Ok(t) => t.strftime("%Y-%m-%d %H:%M UTC").to_string(),
        Err(_) => unix.to_string(),
    }
}

/// `3 d 4 h`, `5 h 12 min`, `40 s`.
pub fn duration(seconds: u64) -> String {
    let (d, h, m) = (
        seconds / 86_400,
        seconds % 86_400 / 3600,
        seconds % 3600 / 60,
    );
    if d > 0 {
        format!("{d} d {h} h")
    } else if h > 0 {
        format!("{h} h {m} min")
    } else if m > 0 {
        format!("{m} min")
    } else {
        format!("{seconds} s")
    }
}

/// `?a=1&b=x%20y` from the pairs whose value is not empty; `""` when none is.
pub fn query_string(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (key, value) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        out.push(if out.is_empty() { '?' } else { '&' });
        out.push_str(&percent_encode(key));
        out.push('=');
        out.push_str(&percent_encode(value));
    }
    out
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// The navigation of one page of a list: where it is, and links to its neighbours that keep
/// the list's other parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pager {
    pub page: u32,
    pub pages: u64,
    pub total: u64,
    /// 1-based positions of the first and last rows shown (0 and 0 for an empty page).
    pub first: u64,
    pub last: u64,
    pub prev: Option<String>,
    pub next: Option<String>,
}

impl Pager {
    /// `params` are the list's other query parameters; `page_key` is the page's own.
    pub fn new(
        path: &str,
        params: &[(&str, &str)],
        page_key: &str,
        page: u32,
        per_page: u32,
        total: u64,
        shown: usize,
    ) -> Pager {
        let per_page = u64::from(per_page.max(1));
        let offset = u64::from(page - 1) * per_page;
        let link = |to: u32| {
            let number = to.to_string();
            let mut pairs = params.to_vec();
            if to > 1 {
                pairs.push((page_key, &number));
            }
            format!("{path}{}", query_string(&pairs))
        };
        Pager {
            page,
            pages: total.div_ceil(per_page).max(1),
            total,
            first: if shown == 0 { 0 } else { offset + 1 },
            last: if shown == 0 { 0 } else { offset + shown as u64 },
            prev: (page > 1).then(|| link(page - 1)),
            next: (offset + per_page < total).then(|| link(page + 1)),
        }
    }
}

/// A 1-based page number from a query parameter: absent or empty is 1; anything else must be
/// a number from 1 to `max`.
pub fn page_number(raw: Option<&str>, max: u32) -> Result<u32, String> {
    match raw.map(str::trim).filter(|r| !r.is_empty()) {
        None => Ok(1),
        Some(text) => match text.parse::<u32>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(format!("the page must be a number from 1 to {max}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_percentages() {
        assert_eq!(bytes(730), "730 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(25_325_268_992), "24 GiB");
        assert_eq!(bytes(u64::MAX), "16384 PiB");
        assert_eq!(percent(Some(41.6)), "42 %");
        assert_eq!(percent(None), "—");
        assert_eq!(percent(Some(f64::NAN)), "—");
    }

    #[test]
    fn times() {
        assert_eq!(relative(100, None), "never");
        assert_eq!(relative(100, Some(88)), "12 s ago");
        assert_eq!(relative(1000, Some(100)), "15 min ago");
        assert_eq!(relative(100_000, Some(100)), "1 d ago");
        assert_eq!(relative(100, Some(200)), "just now");
        assert_eq!(relative(i64::MAX, Some(i64::MIN)), "106751991167300 d ago");
        assert_eq!(duration(10_775), "2 h 59 min");
        assert_eq!(duration(90_000), "1 d 1 h");
        assert_eq!(duration(42), "42 s");
        assert_eq!(datetime(0), "1970-01-01 00:00 UTC");
        assert_eq!(datetime(i64::MAX), i64::MAX.to_string());
    }

    #[test]
    fn query_strings_encode_and_skip_empty_values() {
        assert_eq!(query_string(&[]), "");
        assert_eq!(query_string(&[("q", ""), ("os", "")]), "");
        assert_eq!(
            query_string(&[("q", "web *&x=<1>"), ("os", ""), ("page", "2")]),
            "?q=web%20%2A%26x%3D%3C1%3E&page=2"
        );
        assert_eq!(percent_encode("é"), "%C3%A9");
    }

    #[test]
    fn pagers_link_to_their_neighbours() {
        let first = Pager::new("/", &[("q", "web")], "page", 1, 50, 120, 50);
        assert_eq!((first.first, first.last, first.pages), (1, 50, 3));
        assert_eq!(first.prev, None);
        assert_eq!(first.next.as_deref(), Some("/?q=web&page=2"));
        let second = Pager::new("/", &[("q", "web")], "page", 2, 50, 120, 50);
        assert_eq!(second.prev.as_deref(), Some("/?q=web"));
        assert_eq!(second.next.as_deref(), Some("/?q=web&page=3"));
        let last = Pager::new("/", &[], "page", 3, 50, 120, 20);
        assert_eq!((last.first, last.last), (101, 120));
        assert_eq!(last.next, None);
        let beyond = Pager::new("/", &[], "page", 9, 50, 120, 0);
        assert_eq!((beyond.first, beyond.last), (0, 0));
        assert_eq!(beyond.prev.as_deref(), Some("/?page=8"));
        assert_eq!(beyond.next, None);
        let empty = Pager::new("/", &[], "page", 1, 50, 0, 0);
        assert_eq!((empty.first, empty.last, empty.pages), (0, 0, 1));
        assert_eq!((empty.prev, empty.next), (None, None));
    }

    #[test]
    fn page_numbers() {
        assert_eq!(page_number(None, 10), Ok(1));
        assert_eq!(page_number(Some(" "), 10), Ok(1));
        assert_eq!(page_number(Some("3"), 10), Ok(3));
        for bad in ["0", "11", "-1", "x", "99999999999999"] {
            assert!(page_number(Some(bad), 10).is_err(), "{bad}");
        }
    }
}
