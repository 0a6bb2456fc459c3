//! Just enough XML for SOAP replies: elements (by local name), their attributes and direct text. No DTDs, no
//! validation, no namespace resolution. Malformed input yields a partial tree, never a panic: the callers then
//! find what they need or report a bad response.

/// Deepest nesting read. SOAP replies nest about 12 deep; a reply nested deeper is broken or
/// hostile, and its parse stops there (a partial tree, as for any malformed reply). Lookups below
/// an element cost its depth, so this also bounds the work a hostile camera's reply can cause.
const MAX_DEPTH: usize = 64;
/// Most elements read from one reply (GetProfiles of a many-stream camera has about a thousand).
const MAX_ELEMS: usize = 16_384;

/// One element.
#[derive(Debug)]
struct Elem {
    /// Name without its prefix.
    local: String,
    parent: Option<usize>,
    /// The raw attribute text of the start tag.
    attrs: String,
    /// Direct character data (entities decoded), trimmed on read.
    text: String,
}

/// A parsed document: elements in document order.
#[derive(Debug, Default)]
pub(super) struct Doc {
    elems: Vec<Elem>,
}

impl Doc {
    pub(super) fn parse(src: &str) -> Doc {
        let mut elems: Vec<Elem> = Vec::new();
        let mut open: Vec<usize> = Vec::new();
        let mut rest = src;
        while !rest.is_empty() {
            let Some(lt) = rest.find('<') else {
                append_text(&mut elems, &open, rest, true);
                break;
            };
            append_text(&mut elems, &open, &rest[..lt], true);
            rest = &rest[lt..];
            if let Some(r) = rest.strip_prefix("<![CDATA[") {
                let end = r.find("]]>").unwrap_or(r.len());
                append_text(&mut elems, &open, &r[..end], false);
                rest = r.get(end + 3..).unwrap_or("");
            } else if let Some(r) = rest.strip_prefix("<!--") {
                rest = r.find("-->").and_then(|e| r.get(e + 3..)).unwrap_or("");
            } else if let Some(r) = rest.strip_prefix("<?") {
                rest = r.find("?>").and_then(|e| r.get(e + 2..)).unwrap_or("");
            } else if let Some(r) = rest.strip_prefix("<!") {
                rest = r.find('>').and_then(|e| r.get(e + 1..)).unwrap_or("");
            } else if let Some(r) = rest.strip_prefix("</") {
                let Some(gt) = r.find('>') else { break };
                let name = local(r[..gt].trim());
                // Close the innermost element of that name; a stray end tag is ignored.
                if let Some(pos) = open.iter().rposition(|&i| elems[i].local == name) {
                    open.truncate(pos);
                }
                rest = &r[gt + 1..];
            } else {
                let r = &rest[1..];
                let Some(gt) = tag_end(r) else { break };
                let tag = &r[..gt];
                let self_closing = tag.ends_with('/');
                let tag = tag.strip_suffix('/').unwrap_or(tag);
                let name_end = tag.find(|c: char| c.is_whitespace()).unwrap_or(tag.len());
                let name = local(&tag[..name_end]);
                rest = &r[gt + 1..];
                if name.is_empty() {
                    continue;
                }
                if open.len() >= MAX_DEPTH || elems.len() >= MAX_ELEMS {
                    break;
                }
                elems.push(Elem {
                    local: name.to_string(),
                    parent: open.last().copied(),
                    attrs: tag[name_end..].to_string(),
                    text: String::new(),
                });
                if !self_closing {
                    open.push(elems.len() - 1);
                }
            }
        }
        Doc { elems }
    }

    /// The first element named `local`, in document order.
    pub(super) fn find(&self, local: &str) -> Option<usize> {
        self.elems.iter().position(|e| e.local == local)
    }

    /// The first direct child of `parent` named `local`.
    pub(super) fn child(&self, parent: usize, local: &str) -> Option<usize> {
        self.elems
            .iter()
            .enumerate()
            .skip(parent + 1)
            .find_map(|(i, e)| (e.parent == Some(parent) && e.local == local).then_some(i))
    }

    /// Every element below `root`, in document order.
    pub(super) fn descendants(&self, root: usize) -> impl Iterator<Item = usize> + '_ {
        // In document order a subtree is contiguous: it ends at the first element not under `root`.
        (root + 1..self.elems.len()).take_while(move |&i| self.is_under(i, root))
    }

    pub(super) fn local(&self, i: usize) -> &str {
        self.elems.get(i).map(|e| e.local.as_str()).unwrap_or("")
    }

    /// Direct text of an element, trimmed.
    pub(super) fn text(&self, i: usize) -> &str {
        self.elems.get(i).map(|e| e.text.trim()).unwrap_or("")
    }

    /// The decoded value of attribute `name` (matched on its local name) of element `i`.
    pub(super) fn attr(&self, i: usize, name: &str) -> Option<String> {
        let mut rest = self.elems.get(i)?.attrs.as_str();
        loop {
            rest = rest.trim_start();
            let eq = rest.find('=')?;
            let key = rest[..eq].trim();
            rest = rest[eq + 1..].trim_start();
            let quote = rest.chars().next().filter(|&q| q == '"' || q == '\'')?;
            let body = &rest[1..];
            let end = body.find(quote)?;
            if !key.starts_with("xmlns") && local(key) == name {
                return Some(decode(&body[..end]));
            }
            rest = &body[end + 1..];
        }
    }

    fn is_under(&self, mut i: usize, root: usize) -> bool {
        while let Some(p) = self.elems.get(i).and_then(|e| e.parent) {
            if p == root {
                return true;
            }
            i = p;
        }
        false
    }
}

fn append_text(elems: &mut [Elem], open: &[usize], raw: &str, entities: bool) {
    if let Some(&i) = open.last() {
        if entities {
            elems[i].text.push_str(&decode(raw));
        } else {
            elems[i].text.push_str(raw);
        }
    }
}

/// End of a start tag: the first `>` outside a quoted attribute value.
fn tag_end(s: &str) -> Option<usize> {
    let mut quote = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => return Some(i),
            _ => {}
        }
    }
    None
}

fn local(qname: &str) -> &str {
    qname.rsplit(':').next().unwrap_or("")
}

/// Decodes the five predefined entities and numeric character references; anything else stays as written.
pub(super) fn decode(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let semi = rest.find(';').filter(|&i| i <= 12);
        let decoded = semi.and_then(|semi| {
            let ent = &rest[1..semi];
            let c = match ent {
                "lt" => Some('<'),
                "gt" => Some('>'),
                "amp" => Some('&'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => ent
                    .strip_prefix("#x")
                    .or_else(|| ent.strip_prefix("#X"))
                    .map(|h| u32::from_str_radix(h, 16))
                    .or_else(|| ent.strip_prefix('#').map(|d| d.parse::<u32>()))
                    .and_then(|r| r.ok())
                    .and_then(char::from_u32),
            };
            c.map(|c| (c, semi))
        });
        match decoded {
            Some((c, semi)) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}
