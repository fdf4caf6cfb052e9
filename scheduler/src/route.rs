//! Model routing: which backend serves an inference task.
//!
//! Routes are tried from the highest priority down (ties by name). The first whose `match`
//! fits the task wins; failing that, the highest-priority route marked `default`.

use crate::api::{InteractionClass, ModelRouteSpec, ResolvedRoute};
use crate::policy::pattern_matches;

/// What a route can match on.
#[derive(Clone, Copy, Debug)]
pub struct RouteQuery<'a> {
    pub tenant: &'a str,
    pub model: &'a str,
    pub interaction_class: InteractionClass,
    pub reasoning_required: bool,
    pub classification: Option<&'a str>,
}

fn matches(spec: &ModelRouteSpec, q: &RouteQuery<'_>) -> bool {
    let m = &spec.matches;
    m.interaction_class.is_none_or(|c| c == q.interaction_class)
        && m.reasoning_required
            .is_none_or(|r| r == q.reasoning_required)
        && m.tenant.as_deref().is_none_or(|t| t == q.tenant)
        && m.classification
            .as_deref()
            .is_none_or(|c| Some(c) == q.classification)
        && m.model
            .as_deref()
            .is_none_or(|p| pattern_matches(p, q.model))
}

/// Resolves a task's route. `routes` may be in any order.
pub fn resolve<'a>(
    routes: impl IntoIterator<Item = (&'a str, &'a ModelRouteSpec)>,
    q: &RouteQuery<'_>,
) -> Result<ResolvedRoute, String> {
    let mut sorted: Vec<(&str, &ModelRouteSpec)> = routes.into_iter().collect();
    sorted.sort_by(|a, b| b.1.priority.cmp(&a.1.priority).then(a.0.cmp(b.0)));
    let chosen = sorted
        .iter()
        .find(|(_, r)| matches(r, q))
        .or_else(|| sorted.iter().find(|(_, r)| r.default));
    match chosen {
        Some((name, r)) => Ok(ResolvedRoute {
            route: (*name).to_owned(),
            backend: r.backend,
            endpoint: r.endpoint.clone(),
            model: r.model.clone().unwrap_or_else(|| q.model.to_owned()),
        }),
        None => Err(format!(
            "no SPLAIModelRoute matches model `{}` (tenant `{}`, interactionClass {:?}, reasoningRequired {}, \
             classification {}), and none is marked default: add a route or a default route",
            q.model,
            q.tenant,
            q.interaction_class,
            q.reasoning_required,
            q.classification.unwrap_or("none"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Backend, RouteMatch};

    fn route(priority: i32, m: RouteMatch, backend: Backend, default: bool) -> ModelRouteSpec {
        ModelRouteSpec {
            priority,
            matches: m,
            backend,
            endpoint: format!("http://{backend:?}"),
            model: None,
            default,
        }
    }

    fn query(reasoning: bool) -> RouteQuery<'static> {
        RouteQuery {
            tenant: "acme",
            model: "llama-8b",
            interaction_class: InteractionClass::Interactive,
            reasoning_required: reasoning,
            classification: Some("internal"),
        }
    }

    #[test]
    fn the_highest_priority_matching_route_wins() {
        let reasoning = route(
            10,
            RouteMatch {
                reasoning_required: Some(true),
                ..Default::default()
            },
            Backend::Vllm,
            false,
        );
        let interactive = route(
            5,
            RouteMatch {
                interaction_class: Some(InteractionClass::Interactive),
                ..Default::default()
            },
            Backend::Ollama,
            false,
        );
        let fallback = route(
            0,
            RouteMatch {
                tenant: Some("nobody".into()),
                ..Default::default()
            },
            Backend::Remote,
            true,
        );
        let routes = [
            ("reasoning", &reasoning),
            ("interactive", &interactive),
            ("fallback", &fallback),
        ];
        assert_eq!(
            resolve(routes, &query(true)).unwrap().backend,
            Backend::Vllm
        );
        assert_eq!(
            resolve(routes, &query(false)).unwrap().backend,
            Backend::Ollama
        );
        let only_fallback = [("fallback", &fallback)];
        let r = resolve(only_fallback, &query(false)).unwrap();
        assert_eq!(
            (r.route.as_str(), r.backend, r.model.as_str()),
            ("fallback", Backend::Remote, "llama-8b")
        );
    }

    #[test]
    fn a_task_no_route_matches_gets_an_error_that_says_what_to_add() {
        let r = route(
            0,
            RouteMatch {
                model: Some("mistral-*".into()),
                ..Default::default()
            },
            Backend::Llamacpp,
            false,
        );
        let err = resolve([("m", &r)], &query(false)).unwrap_err();
        assert!(
            err.contains("no SPLAIModelRoute matches model `llama-8b`"),
            "{err}"
        );
        assert!(err.contains("add a route"), "{err}");
    }

    #[test]
    fn each_match_key_selects_its_route_and_a_miss_on_any_key_skips_it() {
        let keyed = |m: RouteMatch| route(5, m, Backend::Vllm, false);
        let fallback = route(0, RouteMatch::default(), Backend::Ollama, true);
        let cases = [
            RouteMatch {
                tenant: Some("acme".into()),
                ..Default::default()
            },
            RouteMatch {
                classification: Some("internal".into()),
                ..Default::default()
            },
            RouteMatch {
                model: Some("llama-*".into()),
                ..Default::default()
            },
            RouteMatch {
                interaction_class: Some(InteractionClass::Interactive),
                ..Default::default()
            },
            RouteMatch {
                reasoning_required: Some(false),
                ..Default::default()
            },
        ];
        for m in cases {
            let r = keyed(m.clone());
            let hit = resolve([("keyed", &r), ("fallback", &fallback)], &query(false)).unwrap();
            assert_eq!(hit.route, "keyed", "{m:?}");
            // The same key with another value does not match: the default serves the task.
            let mut other = m.clone();
            if other.tenant.is_some() {
                other.tenant = Some("globex".into());
            }
            if other.classification.is_some() {
                other.classification = Some("secret".into());
            }
            if other.model.is_some() {
                other.model = Some("mistral-*".into());
            }
            if other.interaction_class.is_some() {
                other.interaction_class = Some(InteractionClass::Batch);
            }
            if other.reasoning_required.is_some() {
                other.reasoning_required = Some(true);
            }
            let r = keyed(other);
            let miss = resolve([("keyed", &r), ("fallback", &fallback)], &query(false)).unwrap();
            assert_eq!(miss.route, "fallback", "{m:?}");
        }
    }
}
