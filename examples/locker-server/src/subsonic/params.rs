//! A request's parameters: the query string and, for a form POST (the `formPost` extension),
//! the `application/x-www-form-urlencoded` body, merged. Names may repeat (`id=1&id=2`).

use std::str::FromStr;

use super::response::Failure;

/// The most a `size`/`count` parameter may ask for: work per request stays bounded.
pub const MAX_PAGE: usize = 500;

#[derive(Debug, Default)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// The parameters of `query` followed by those of a form `body`.
    pub fn parse(query: Option<&str>, body: Option<&[u8]>) -> Params {
        let mut pairs: Vec<(String, String)> = query
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        if let Some(b) = body {
            pairs.extend(form_urlencoded::parse(b).into_owned());
        }
        Params(pairs)
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Every value of `name`, in order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of a required parameter: error 10 when absent.
    pub fn require(&self, name: &str) -> Result<&str, Failure> {
        self.get(name).ok_or_else(|| Failure::missing(name))
    }

    /// A number parameter: `None` when absent, error 0 when it is not a number.
    pub fn number<T: FromStr>(&self, name: &str) -> Result<Option<T>, Failure> {
        match self.get(name).map(str::trim) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| Failure::generic(format!("Invalid value for {name}: {v:?}"))),
        }
    }

    /// A page size: `default` when absent, at most [`MAX_PAGE`].
    pub fn count(&self, name: &str, default: usize) -> Result<usize, Failure> {
        Ok(self.number::<usize>(name)?.unwrap_or(default).min(MAX_PAGE))
    }

    /// An offset: 0 when absent.
    pub fn offset(&self, name: &str) -> Result<usize, Failure> {
        Ok(self.number::<usize>(name)?.unwrap_or(0))
    }

    /// A boolean parameter (`true`/`false`, `1`/`0`): `default` when absent.
    pub fn boolean(&self, name: &str, default: bool) -> Result<bool, Failure> {
        match self.get(name).map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) if v == "true" || v == "1" => Ok(true),
            Some(v) if v == "false" || v == "0" => Ok(false),
            Some(v) => Err(Failure::generic(format!("Invalid value for {name}: {v:?}"))),
        }
    }
}

/// The `offset`..`offset + count` page of `items`.
pub fn page<T>(items: impl IntoIterator<Item = T>, offset: usize, count: usize) -> Vec<T> {
    items.into_iter().skip(offset).take(count).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_form_merge_and_values_are_checked() {
        let p = Params::parse(
            Some("u=al%20ice&id=1&size=9999"),
            Some(b"id=2&t=x+y&b=maybe"),
        );
        assert_eq!(p.get("u"), Some("al ice"));
        assert_eq!(p.all("id").collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(p.get("t"), Some("x y"));
        assert_eq!(p.count("size", 10).unwrap(), MAX_PAGE);
        assert_eq!(p.count("other", 10).unwrap(), 10);
        assert_eq!(p.require("nope").unwrap_err().code, 10);
        assert_eq!(p.number::<u32>("u").unwrap_err().code, 0);
        assert_eq!(p.boolean("b", true).unwrap_err().code, 0);
        assert!(p.boolean("absent", true).unwrap());
        assert_eq!(page(0..10, 8, 5), [8, 9]);
    }
}
