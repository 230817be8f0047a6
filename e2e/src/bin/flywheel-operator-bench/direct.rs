//! The API-server-alone phase: the bench writes what the operator's reconcile would.

use super::*;

/// The bench itself creating what the operator would, with no operator running.
pub(super) async fn api_server_phase(
    cluster: &Cluster,
    args: &Args,
    champion: &ModelVersion,
    round: usize,
) -> anyhow::Result<Duration> {
    let client = cluster.client();
    let ns = create_namespace(&client, "bench-apiserver").await?;
    eprintln!("round {round}: API server alone creating {} Deployments' objects", args.count);
    let start = Instant::now();
    futures::stream::iter(0..args.count)
        .map(|i| create_directly(&client, &ns, champion, i))
        .buffer_unordered(args.concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(start.elapsed())
}

/// What the operator's reconcile writes for one Deployment, written by the bench instead.
pub(super) async fn create_directly(
    client: &Client,
    ns: &str,
    champion: &ModelVersion,
    i: usize,
) -> anyhow::Result<()> {
    let d: FlywheelDeployment = apply(client, ns, &deployment_manifest(&name(i))).await?;
    let image = Settings::default().server_image;
    let inputs = build::Inputs {
        champion,
        shadow: None,
        shadow_sample_rate: 1.0,
        feedback: None,
        review_service: None,
        reference_statistics_uri: None,
        server_image: &image,
    };
    let config = build::serving_config(&d, &inputs)?;
    // The operator creates the token Secret once (POST), and applies the rest.
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &token_secret(&d)?)
        .await
        .with_context(|| format!("creating Secret {}", build::token_secret_name(&d)))?;
    apply::<ConfigMap, _>(client, ns, &build::config_map(&d, &config)?).await?;
    apply::<AppsDeployment, _>(client, ns, &build::apps_deployment(&d, &config, &BTreeSet::new(), &image)?).await?;
    apply::<Service, _>(client, ns, &build::service(&d)?).await?;
    Ok(())
}

/// The review-token Secret as the operator creates it.
pub(super) fn token_secret(d: &FlywheelDeployment) -> anyhow::Result<Secret> {
    use std::io::Read;
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut secret = Secret::default();
    secret.metadata.name = Some(build::token_secret_name(d));
    secret.metadata.labels = Some(build::labels(d));
    secret.metadata.owner_references =
        Some(vec![d.controller_owner_ref(&()).context("applied Deployment without uid")?]);
    secret.data = Some([("token".to_string(), ByteString(token.into_bytes()))].into());
    Ok(secret)
}
