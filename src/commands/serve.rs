//! `berth serve [--listen ADDR] [--jobs N]`: a long-running server that
//! ships every push within seconds ([`pipeline::realtime`]), from the forge's
//! webhooks ([`server`]) and a poll of every repo, and shows what it does on
//! a page, as JSON and as metrics. SIGTERM (or Ctrl-C) stops it taking work;
//! the rollouts in flight finish or roll back, then it exits; a second
//! signal exits at once (held leases then expire for the next holder).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::commands::{Context, DeployArgs};
use crate::exit;
use crate::pipeline::realtime::{self, Realtime};
use crate::server::webhook::Secret;
use crate::server::{self, Secrets, Server};

/// Where `berth serve` listens without `--listen` or `[serve] listen`.
const DEFAULT_LISTEN: &str = "127.0.0.1:8484";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The address and port to listen on (default: `[serve] listen`, else 127.0.0.1:8484).
    #[arg(long, env = "BERTH_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// How many sites to ship at once.
    #[arg(long, short = 'j', default_value_t = 2)]
    pub jobs: usize,
    #[command(flatten)]
    pub deploy: DeployArgs,
}

/// Serves until SIGTERM or Ctrl-C.
pub async fn run(context: &Context<'_>, args: Args) -> anyhow::Result<u8> {
    let config = context.view()?;
    let printer = context.printer;
    let serve = config.serve.clone();
    let listen = match args.listen {
        Some(address) => address,
        None => serve
            .listen
            .as_deref()
            .unwrap_or(DEFAULT_LISTEN)
            .parse()
            .expect("validated"),
    };
    let secrets = secrets(&serve, printer);
    let interrupted = Arc::new(AtomicBool::new(false));
    let realtime = Realtime::start(
        realtime::Settings {
            config,
            options: args.deploy.options(),
            jobs: args.jobs.max(1),
        },
        interrupted,
        printer,
    )
    .await?;
    let listener = server::bind(listen)
        .await
        .map_err(|error| anyhow::anyhow!("cannot listen on {listen}: {error}"))?;
    let address = listener.local_addr().unwrap_or(listen);
    printer.note(&format!(
        "serving on http://{address}/ (webhooks: /hooks/github, /hooks/gitlab, /hooks/generic); polling every {}",
        humantime::format_duration(serve.poll_interval)
    ));
    realtime.catch_up();
    tokio::spawn(Arc::clone(&realtime).poll_every(serve.poll_interval));
    let server = Server::new(Arc::clone(&realtime), secrets, printer);
    server.serve(listener, first_signal()).await?;
    printer.note("stopping: no new work; the runs in flight finish or roll back (again to abort now)");
    tokio::select! {
        () = realtime.drain() => {}
        () = first_signal() => {
            printer.warning("aborted: Deployment leases held now expire within 30s");
            return Ok(exit::INTERRUPTED);
        }
    }
    printer.note("stopped");
    Ok(exit::OK)
}

/// Each endpoint's secret: its own variable, else `webhook_secret_env`'s.
fn secrets(serve: &crate::config::Serve, printer: &crate::ui::Printer) -> Secrets {
    let read = |own: &Option<String>| {
        own.as_ref()
            .or(serve.webhook_secret_env.as_ref())
            .and_then(|name| std::env::var(name).ok())
            .filter(|value| !value.is_empty())
            .map(Secret::new)
    };
    let secrets = Secrets {
        github: read(&serve.github_secret_env),
        gitlab: read(&serve.gitlab_token_env),
        generic: read(&serve.generic_secret_env),
    };
    if secrets.github.is_none() && secrets.gitlab.is_none() && secrets.generic.is_none() {
        printer.warning(&format!(
            "no webhook secret is set ([serve] webhook_secret_env{}): every delivery is refused, and only the poll ships",
            serve
                .webhook_secret_env
                .as_ref()
                .map(|name| format!(" names {name}, which is not set"))
                .unwrap_or_default()
        ));
    }
    secrets
}

/// The first SIGTERM or Ctrl-C.
async fn first_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) =
        (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
}
