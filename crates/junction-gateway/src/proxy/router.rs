//! Matching a request's method and path to a route, with path parameters.

use http::Method;
use std::collections::HashMap;
use std::sync::Arc;

/// Most `{param}`s one path template may have. matchit panics past 26 (found
/// by the `router` fuzz target); no real API needs more than a handful.
pub const MAX_PATH_PARAMS: usize = 16;

/// Why a template cannot be added.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// More than [`MAX_PATH_PARAMS`] parameters.
    #[error("{0} path parameters; at most {MAX_PATH_PARAMS} are allowed")]
    TooManyParams(usize),
    /// Invalid, or conflicting with a template already added.
    #[error(transparent)]
    Insert(#[from] matchit::InsertError),
}

/// Checks what matchit does not: the number of parameters of `template`
/// (`{{` and `}}` are escaped braces, not parameters).
pub fn check_template(template: &str) -> Result<(), RouteError> {
    let bytes = template.as_bytes();
    let (mut params, mut i) = (0, 0);
    while i < bytes.len() {
        if bytes[i] == b'{' {
            if bytes.get(i + 1) == Some(&b'{') {
                i += 2;
                continue;
            }
            params += 1;
        }
        i += 1;
    }
    if params > MAX_PATH_PARAMS {
        return Err(RouteError::TooManyParams(params));
    }
    Ok(())
}

/// Routes indexed by method, then by path template (matchit's radix tree).
pub struct Router<R> {
    by_method: HashMap<Method, matchit::Router<Arc<R>>>,
    any_method: matchit::Router<Arc<R>>,
}

/// A matched route and its path parameters in template order.
pub struct Matched<R> {
    /// The route.
    pub route: Arc<R>,
    /// `(name, value)` of each `{param}`.
    pub params: Vec<(String, String)>,
}

impl<R> Default for Router<R> {
    fn default() -> Self {
        Self {
            by_method: HashMap::new(),
            any_method: matchit::Router::new(),
        }
    }
}

impl<R> Router<R> {
    /// Adds a route for `method` (any method when `None`) and a template such as `/products/{id}`.
    pub fn insert(
        &mut self,
        method: Option<Method>,
        template: &str,
        route: Arc<R>,
    ) -> Result<(), RouteError> {
        check_template(template)?;
        Ok(match method {
            Some(m) => self.by_method.entry(m).or_default().insert(template, route),
            None => self.any_method.insert(template, route),
        }?)
    }

    /// The route for a request; method-specific routes win over any-method
    /// ones, and a `HEAD` without a route of its own goes to the `GET` route
    /// (RFC 9110 §9.3.2: HEAD is GET without the body).
    pub fn find(&self, method: &Method, path: &str) -> Option<Matched<R>> {
        let exact = |m: &Method| self.by_method.get(m).and_then(|r| r.at(path).ok());
        let hit = exact(method)
            .or_else(|| {
                (*method == Method::HEAD)
                    .then(|| exact(&Method::GET))
                    .flatten()
            })
            .or_else(|| self.any_method.at(path).ok())?;
        Some(Matched {
            route: hit.value.clone(),
            params: hit
                .params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
    }
}

/// Fills `{name}` placeholders of `template` from `params` (`{*rest}` too).
pub fn render_path(template: &str, params: &[(String, String)]) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            out.push_str(&rest[open..]);
            return out;
        };
        let name = rest[open + 1..open + close].trim_start_matches('*');
        match params.iter().find(|(k, _)| k == name) {
            Some((_, v)) => out.push_str(v),
            None => out.push_str(&rest[open..=open + close]),
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `router` fuzz target: matchit panicked ("Too many route
    /// parameters") on a template with more than 26 parameters.
    #[test]
    fn a_template_with_too_many_params_is_an_error_not_a_panic() {
        let path: String = (0..40).map(|i| format!("/{{p{i}}}")).collect();
        let mut r = Router::default();
        let err = r
            .insert(Some(Method::GET), &path, Arc::new(()))
            .unwrap_err();
        assert!(matches!(err, RouteError::TooManyParams(40)), "{err}");
        let ok: String = (0..MAX_PATH_PARAMS).map(|i| format!("/{{p{i}}}")).collect();
        r.insert(Some(Method::GET), &ok, Arc::new(())).unwrap();
        // Escaped braces are not parameters.
        assert!(check_template("/a/{{literal}}/{{x}}").is_ok());
    }

    #[test]
    fn method_specific_routes_win_and_params_are_extracted() {
        let mut r = Router::default();
        r.insert(Some(Method::GET), "/products/{id}", Arc::new("get"))
            .unwrap();
        r.insert(None, "/products/{id}", Arc::new("any")).unwrap();
        let m = r.find(&Method::GET, "/products/42").unwrap();
        assert_eq!(*m.route, "get");
        assert_eq!(m.params, vec![("id".to_string(), "42".to_string())]);
        assert_eq!(*r.find(&Method::PUT, "/products/42").unwrap().route, "any");
        assert!(r.find(&Method::GET, "/nothing").is_none());
        assert_eq!(*r.find(&Method::HEAD, "/products/42").unwrap().route, "get");
        r.insert(Some(Method::HEAD), "/products/{id}", Arc::new("head"))
            .unwrap();
        assert_eq!(
            *r.find(&Method::HEAD, "/products/42").unwrap().route,
            "head"
        );
    }

    #[test]
    fn renders_templates() {
        let p = vec![
            ("id".to_string(), "7".to_string()),
            ("rest".to_string(), "a/b".to_string()),
        ];
        assert_eq!(render_path("/v2/items/{id}", &p), "/v2/items/7");
        assert_eq!(render_path("/files/{*rest}", &p), "/files/a/b");
        assert_eq!(render_path("/x/{missing}", &p), "/x/{missing}");
    }
}
