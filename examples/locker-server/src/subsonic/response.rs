//! The `subsonic-response` envelope in JSON (`f=json`) or XML (the default, and `f=xml`), and
//! the Subsonic errors. Every answer is built once as JSON values; the XML is written from them
//! with quick-xml by the rules the Subsonic XML schema follows: a scalar field is an attribute
//! (`value` is the element's text), an object is a child element, an array is a repeated child
//! element.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use quick_xml::Writer;
use quick_xml::events::attributes::Attribute;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::name::QName;
use serde_json::{Map, Value};

/// The Subsonic API version served (clients such as Symfonium reject anything else).
pub const API_VERSION: &str = "1.16.1";
pub const SERVER_TYPE: &str = "lockerstore";
const XMLNS: &str = "http://subsonic.org/restapi";

/// The response format a request asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Xml,
}

impl Format {
    /// `f=json` is JSON; anything else (`xml`, absent, unknown) is XML, the Subsonic default.
    pub fn of(f: Option<&str>) -> Format {
        match f {
            Some("json") => Format::Json,
            _ => Format::Xml,
        }
    }
}

/// A Subsonic error: answered with HTTP 200 and `status="failed"`, as clients expect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub code: u32,
    pub message: String,
}

impl Failure {
    pub fn new(code: u32, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    /// 0: a generic error (a bad parameter value, a server-side failure).
    pub fn generic(message: impl Into<String>) -> Failure {
        Failure::new(0, message)
    }

    /// 10: a required parameter is missing.
    pub fn missing(name: &str) -> Failure {
        Failure::new(10, format!("Required parameter is missing: {name}"))
    }

    /// 50: the user may not do this.
    pub fn not_authorized(message: impl Into<String>) -> Failure {
        Failure::new(50, message)
    }

    /// 70: the requested data was not found.
    pub fn not_found(what: &str) -> Failure {
        Failure::new(70, format!("{what} not found"))
    }
}

/// What an endpoint answers: fields for the envelope, or a response of its own (media).
pub enum Reply {
    Body(Map<String, Value>),
    Raw(Response),
}

impl Reply {
    /// An empty `ok` answer.
    pub fn empty() -> Reply {
        Reply::Body(Map::new())
    }

    /// An answer with one field.
    pub fn with(name: &str, value: Value) -> Reply {
        let mut m = Map::new();
        m.insert(name.to_owned(), value);
        Reply::Body(m)
    }
}

/// Renders the envelope with `fields` (and `error` when failed).
pub fn envelope(format: Format, outcome: Result<Map<String, Value>, Failure>) -> Response {
    let mut root = Map::new();
    let ok = outcome.is_ok();
    root.insert("status".into(), (if ok { "ok" } else { "failed" }).into());
    root.insert("version".into(), API_VERSION.into());
    root.insert("type".into(), SERVER_TYPE.into());
    root.insert("serverVersion".into(), env!("CARGO_PKG_VERSION").into());
    root.insert("openSubsonic".into(), true.into());
    match outcome {
        Ok(fields) => root.extend(fields),
        Err(f) => {
            let mut error = Map::new();
            error.insert("code".into(), f.code.into());
            error.insert("message".into(), f.message.into());
            root.insert("error".into(), Value::Object(error));
        }
    }
    match format {
        Format::Json => {
            let mut doc = Map::new();
            doc.insert("subsonic-response".into(), Value::Object(root));
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                Value::Object(doc).to_string(),
            )
                .into_response()
        }
        Format::Xml => match to_xml(&root) {
            Ok(xml) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
                xml,
            )
                .into_response(),
            Err(e) => {
                tracing::error!(error = %e, "xml answer not written");
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        },
    }
}

/// Characters XML 1.0 cannot carry at all (not even escaped) become U+FFFD.
fn xml_safe(s: &str) -> std::borrow::Cow<'_, str> {
    let allowed = |c: char| {
        matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}')
    };
    if s.chars().all(allowed) {
        s.into()
    } else {
        s.chars()
            .map(|c| if allowed(c) { c } else { '\u{FFFD}' })
            .collect::<String>()
            .into()
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(xml_safe(s).into_owned()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// An attribute escaped by quick-xml, with tabs and line breaks kept as character references
/// (a reader would otherwise normalise them to spaces).
fn attribute<'a>(key: &'a str, value: &str) -> Attribute<'a> {
    let escaped = quick_xml::escape::escape(value);
    let value = if escaped.contains(['\t', '\n', '\r']) {
        escaped
            .replace('\t', "&#9;")
            .replace('\n', "&#10;")
            .replace('\r', "&#13;")
            .into()
    } else {
        escaped.into_owned().into()
    };
    Attribute {
        key: QName(key),
        value,
    }
}

fn write_element(
    w: &mut Writer<Vec<u8>>,
    name: &str,
    fields: &Map<String, Value>,
    root: bool,
) -> std::io::Result<()> {
    let mut start = BytesStart::new(name);
    if root {
        start.push_attribute(("xmlns", XMLNS));
    }
    let mut text = None;
    for (k, v) in fields {
        if let Some(s) = scalar(v) {
            if k == "value" {
                text = Some(s);
            } else {
                start.push_attribute(attribute(k, &s));
            }
        }
    }
    let has_children = fields
        .values()
        .any(|v| matches!(v, Value::Object(_) | Value::Array(_)));
    if !has_children && text.is_none() {
        return w.write_event(Event::Empty(start));
    }
    w.write_event(Event::Start(start))?;
    if let Some(t) = text {
        w.write_event(Event::Text(BytesText::new(&t)))?;
    }
    for (k, v) in fields {
        match v {
            Value::Object(m) => write_element(w, k, m, false)?,
            Value::Array(items) => {
                for item in items {
                    match item {
                        Value::Object(m) => write_element(w, k, m, false)?,
                        other => {
                            if let Some(s) = scalar(other) {
                                w.write_event(Event::Start(BytesStart::new(k.as_str())))?;
                                w.write_event(Event::Text(BytesText::new(&s)))?;
                                w.write_event(Event::End(BytesEnd::new(k.as_str())))?;
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    w.write_event(Event::End(BytesEnd::new(name)))
}

/// The XML document of an envelope.
pub fn to_xml(root: &Map<String, Value>) -> std::io::Result<Vec<u8>> {
    let mut w = Writer::new(Vec::new());
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    write_element(&mut w, "subsonic-response", root, true)?;
    Ok(w.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn xml_follows_the_subsonic_shape_and_escapes() {
        let Value::Object(root) = json!({
            "status": "ok",
            "genres": {"genre": [{"value": "R&B <x>", "songCount": 2}, {"value": "Rock", "songCount": 1}]},
            "song": {"id": "tr-1", "title": "a \"quoted\" & <odd>\u{1} title", "isDir": false, "comment": "two\nlines"},
            "openSubsonicExtensions": [{"name": "formPost", "versions": [1]}],
            "nothing": null,
        }) else {
            unreachable!()
        };
        let xml = String::from_utf8(to_xml(&root).unwrap()).unwrap();
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?><subsonic-response xmlns=\"http://subsonic.org/restapi\""), "{xml}");
        assert!(
            xml.contains("<genre songCount=\"2\">R&amp;B &lt;x&gt;</genre>"),
            "{xml}"
        );
        assert!(
            xml.contains("title=\"a &quot;quoted&quot; &amp; &lt;odd&gt;\u{FFFD} title\""),
            "{xml}"
        );
        assert!(xml.contains("<openSubsonicExtensions name=\"formPost\"><versions>1</versions></openSubsonicExtensions>"), "{xml}");
        assert!(xml.contains("comment=\"two&#10;lines\""), "{xml}");
        assert!(!xml.contains("nothing"));
    }
}
