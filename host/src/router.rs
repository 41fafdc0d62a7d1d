//! Which app serves a URL path: the routes of a manifest, the most specific first.
//!
//! A route is exact (`/hello`) or a prefix (`/api/...`, and `/...` for everything), as Spin
//! writes them. The longest route that matches wins; at equal length an exact route beats a
//! prefix. The part of the path a prefix matched is where the app is mounted: a CGI program
//! gets it as `SCRIPT_NAME` and the rest as `PATH_INFO`.

use std::sync::Arc;

use wasmtime::{Result, bail};

use crate::App;

/// The URL paths a route takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoutePattern {
    /// This path only (a trailing `/` does not count).
    Exact(String),
    /// This path and everything below it; stored without the trailing `/`, empty for `/...`.
    Prefix(String),
}

impl RoutePattern {
    /// `/hello`, `/api/...` or `/...`.
    pub fn parse(route: &str) -> Result<RoutePattern> {
        if !route.starts_with('/') {
            bail!("route `{route}` does not start with `/`");
        }
        if let Some(prefix) = route.strip_suffix("/...") {
            if prefix.contains("...") || prefix.contains(['*', '?', '#']) {
                bail!("route `{route}`: `...` may only end a route");
            }
            return Ok(RoutePattern::Prefix(
                prefix.trim_end_matches('/').to_string(),
            ));
        }
        if route.contains("...") || route.contains(['*', '?', '#']) {
            bail!("route `{route}`: a prefix route ends with `/...` (e.g. `/api/...`)");
        }
        if route.split('/').any(|segment| segment.starts_with(':')) {
            bail!(
                "route `{route}`: parameters (`:name`) are not routed; route the prefix (`/users/...`) and read the path in the app"
            );
        }
        let exact = route.trim_end_matches('/');
        Ok(RoutePattern::Exact(
            if exact.is_empty() { "/" } else { exact }.to_string(),
        ))
    }

    /// The mount point (the matched part of the path) when `path` is taken by this route.
    fn mount<'a>(&'a self, path: &str) -> Option<&'a str> {
        match self {
            RoutePattern::Exact(exact) => {
                let trimmed = path.trim_end_matches('/');
                let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
                (trimmed == exact).then(|| if exact == "/" { "" } else { exact.as_str() })
            }
            // The catch-all takes every target, `*` (OPTIONS) included.
            RoutePattern::Prefix(prefix) if prefix.is_empty() => Some(""),
            RoutePattern::Prefix(prefix) => {
                let rest = path.strip_prefix(prefix.as_str())?;
                (rest.is_empty() || rest.starts_with('/')).then_some(prefix.as_str())
            }
        }
    }

    /// Orders routes from the most specific: longer first, exact before prefix.
    fn specificity(&self) -> (usize, bool) {
        match self {
            RoutePattern::Exact(exact) => (exact.len(), true),
            RoutePattern::Prefix(prefix) => (prefix.len(), false),
        }
    }
}

impl std::fmt::Display for RoutePattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RoutePattern::Exact(exact) => f.write_str(exact),
            RoutePattern::Prefix(prefix) => write!(f, "{prefix}/..."),
        }
    }
}

/// One route to an app.
#[derive(Clone)]
pub struct Route {
    pub pattern: RoutePattern,
    pub app: Arc<App>,
    /// Set the `spin-*` request headers that Spin gives a component (its SDKs route by them).
    pub spin_headers: bool,
}

/// The routes of a server.
#[derive(Clone, Default)]
pub struct Router {
    routes: Vec<Route>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.routes
                    .iter()
                    .map(|r| format!("{} -> {}", r.pattern, r.app.name())),
            )
            .finish()
    }
}

impl Router {
    /// Refuses two routes with the same pattern.
    pub fn new(mut routes: Vec<Route>) -> Result<Router> {
        routes.sort_by_key(|route| std::cmp::Reverse(route.pattern.specificity()));
        let mut taken = std::collections::HashMap::new();
        for route in &routes {
            if let Some(first) = taken.insert(route.pattern.to_string(), route.app.name()) {
                bail!(
                    "route `{}` is taken twice: by app `{first}` and by app `{}`",
                    route.pattern,
                    route.app.name()
                );
            }
        }
        Ok(Router { routes })
    }

    /// One app for every path (`wasmbridge serve APP.wasm`).
    pub fn single(app: Arc<App>) -> Router {
        Router {
            routes: vec![Route {
                pattern: RoutePattern::Prefix(String::new()),
                app,
                spin_headers: false,
            }],
        }
    }

    /// The route that takes `path`, and the mount point it matched.
    pub fn route(&self, path: &str) -> Option<(&Route, &str)> {
        self.routes
            .iter()
            .find_map(|route| route.pattern.mount(path).map(|mount| (route, mount)))
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Each app once, in route order.
    pub fn apps(&self) -> Vec<Arc<App>> {
        let mut apps: Vec<Arc<App>> = Vec::new();
        for route in &self.routes {
            if !apps.iter().any(|app| Arc::ptr_eq(app, &route.app)) {
                apps.push(route.app.clone());
            }
        }
        apps
    }
}

#[cfg(test)]
mod tests {
    use super::RoutePattern;

    #[test]
    fn patterns() {
        let p = |s| RoutePattern::parse(s).unwrap();
        assert_eq!(p("/api/..."), RoutePattern::Prefix("/api".into()));
        assert_eq!(p("/..."), RoutePattern::Prefix("".into()));
        assert_eq!(p("/hello/"), RoutePattern::Exact("/hello".into()));
        assert_eq!(p("/api/...").mount("/api"), Some("/api"));
        assert_eq!(p("/api/...").mount("/api/x/y"), Some("/api"));
        assert_eq!(p("/api/...").mount("/apix"), None);
        assert_eq!(p("/...").mount("/anything"), Some(""));
        assert_eq!(p("/hello").mount("/hello/"), Some("/hello"));
        assert_eq!(p("/hello").mount("/hello/x"), None);
        assert_eq!(p("/").mount("/"), Some(""));
        assert!(RoutePattern::parse("api").is_err());
        assert!(RoutePattern::parse("/a/.../b").is_err());
    }
}
