//! A container's environment: `env` (value, valueFrom ConfigMap/Secret/fieldRef) and `envFrom`,
//! with `$(VAR)` expansion as the real kubelet does it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::{Api, Client};

/// What a failed lookup turns into: waiting reason CreateContainerConfigError with this message.
pub type ConfigError = String;

/// Pod facts fieldRef can read.
pub struct PodFacts<'a> {
    pub pod: &'a Pod,
    pub pod_ip: String,
    pub node_name: String,
    pub host_ip: String,
}

impl PodFacts<'_> {
    fn field(&self, path: &str) -> Result<String, ConfigError> {
        let meta = &self.pod.metadata;
        let spec = self.pod.spec.as_ref();
        let from_map = |map: &Option<BTreeMap<String, String>>, key: &str| {
            map.as_ref().and_then(|m| m.get(key)).cloned().unwrap_or_default()
        };
        Ok(match path {
            "metadata.name" => meta.name.clone().unwrap_or_default(),
            "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
            "metadata.uid" => meta.uid.clone().unwrap_or_default(),
            "spec.nodeName" => self.node_name.clone(),
            "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()).unwrap_or_default(),
            "status.podIP" | "status.podIPs" => self.pod_ip.clone(),
            "status.hostIP" | "status.hostIPs" => self.host_ip.clone(),
            other => {
                if let Some(key) = other.strip_prefix("metadata.labels['").and_then(|k| k.strip_suffix("']")) {
                    from_map(&meta.labels, key)
                } else if let Some(key) =
                    other.strip_prefix("metadata.annotations['").and_then(|k| k.strip_suffix("']"))
                {
                    from_map(&meta.annotations, key)
                } else {
                    return Err(format!("fieldRef {other:?} is not supported by the process kubelet"));
                }
            }
        })
    }
}

async fn config_map(client: &Client, ns: &str, name: &str) -> Result<Option<ConfigMap>, ConfigError> {
    Api::<ConfigMap>::namespaced(client.clone(), ns).get_opt(name).await.map_err(|e| format!("configmap {name:?}: {e}"))
}

async fn secret(client: &Client, ns: &str, name: &str) -> Result<Option<Secret>, ConfigError> {
    Api::<Secret>::namespaced(client.clone(), ns).get_opt(name).await.map_err(|e| format!("secret {name:?}: {e}"))
}

fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    if let Some(v) = secret.data.as_ref().and_then(|d| d.get(key)) {
        return Some(String::from_utf8_lossy(&v.0).into_owned());
    }
    secret.string_data.as_ref().and_then(|d| d.get(key)).cloned()
}

/// Resolves the environment in declaration order (later entries may reference earlier ones).
pub async fn resolve(
    client: &Client,
    facts: &PodFacts<'_>,
    container: &Container,
) -> Result<Vec<(String, String)>, ConfigError> {
    let ns = facts.pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut vars: Vec<(String, String)> = Vec::new();
    let set = |vars: &mut Vec<(String, String)>, name: String, value: String| {
        vars.retain(|(n, _)| *n != name);
        vars.push((name, value));
    };

    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.clone().unwrap_or_default();
        if let Some(r) = &source.config_map_ref {
            match config_map(client, ns, &r.name).await? {
                Some(cm) => {
                    for (k, v) in cm.data.unwrap_or_default() {
                        set(&mut vars, format!("{prefix}{k}"), v);
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(format!("configmap {:?} not found", r.name)),
            }
        }
        if let Some(r) = &source.secret_ref {
            match secret(client, ns, &r.name).await? {
                Some(s) => {
                    for (k, v) in s.data.unwrap_or_default() {
                        set(&mut vars, format!("{prefix}{k}"), String::from_utf8_lossy(&v.0).into_owned());
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(format!("secret {:?} not found", r.name)),
            }
        }
    }

    for var in container.env.iter().flatten() {
        let value = if let Some(from) = &var.value_from {
            if let Some(f) = &from.field_ref {
                Some(facts.field(&f.field_path)?)
            } else if let Some(r) = &from.config_map_key_ref {
                let cm = config_map(client, ns, &r.name).await?;
                match cm.and_then(|cm| cm.data.and_then(|d| d.get(&r.key).cloned())) {
                    Some(v) => Some(v),
                    None if r.optional == Some(true) => None,
                    None => {
                        return Err(format!("couldn't find key {} in ConfigMap {}/{}", r.key, ns, r.name));
                    }
                }
            } else if let Some(r) = &from.secret_key_ref {
                let s = secret(client, ns, &r.name).await?;
                match s.as_ref().and_then(|s| secret_value(s, &r.key)) {
                    Some(v) => Some(v),
                    None if r.optional == Some(true) => None,
                    None => {
                        return Err(format!("couldn't find key {} in Secret {}/{}", r.key, ns, r.name));
                    }
                }
            } else if let Some(r) = &from.resource_field_ref {
                return Err(format!("resourceFieldRef {:?} is not supported by the process kubelet", r.resource));
            } else {
                None
            }
        } else {
            Some(expand(var.value.as_deref().unwrap_or(""), &vars))
        };
        if let Some(value) = value {
            set(&mut vars, var.name.clone(), value);
        }
    }
    Ok(vars)
}

/// Kubernetes `$(VAR)` expansion: known variables are replaced, `$$` escapes, unknown references stay.
pub fn expand(input: &str, vars: &[(String, String)]) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match vars.iter().rev().find(|(n, _)| n == name) {
                Some((_, v)) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::expand;

    #[test]
    fn expands_like_the_kubelet() {
        let vars = vec![("A".to_string(), "1".to_string()), ("B".to_string(), "two".to_string())];
        assert_eq!(expand("x-$(A)-$(B)", &vars), "x-1-two");
        assert_eq!(expand("$(MISSING) $$(A) $", &vars), "$(MISSING) $(A) $");
    }
}
