//! What the guard tells its service manager (systemd's `Type=notify`, sd_notify(3)),
//! through the datagram socket `$NOTIFY_SOCKET` names: `READY=1` once every listener is
//! bound and the policy is loaded; `RELOADING=1` (with `MONOTONIC_USEC=`, which systemd
//! 253's `Type=notify-reload` wants) when a SIGHUP's reload starts and `READY=1` when it
//! is done, applied or refused; `STOPPING=1` when the drain starts. A `STATUS=` line
//! says the same in words for `systemctl status`.
//!
//! Nothing is sent when `NOTIFY_SOCKET` is unset. A message that cannot be sent is
//! logged at debug level and otherwise ignored: the guard serves the same either way.

use sd_notify::NotifyState;

/// The guard is serving on `listen`.
pub(crate) fn ready(listen: &[std::net::SocketAddr]) {
    let addrs: Vec<String> = listen.iter().map(ToString::to_string).collect();
    let status = format!("serving on {}", addrs.join(", "));
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// A reload (SIGHUP) starts.
pub(crate) fn reloading() {
    let mut states = vec![
        NotifyState::Reloading,
        NotifyState::Status("reloading the configuration"),
    ];
    // systemd wants the time the reload started beside RELOADING=1, to order it.
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    send(&states);
}

/// The reload is over: applied, or refused with `refused` (the running configuration
/// stays). Either way the guard serves: `READY=1`.
pub(crate) fn reloaded(refused: Option<&crate::Error>) {
    let status = match refused {
        None => "configuration reloaded".to_owned(),
        // One line: STATUS= ends at the newline.
        Some(e) => {
            format!("reload refused, the running configuration stays: {e}").replace('\n', " ")
        }
    };
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// The drain (SIGTERM, SIGINT) starts.
pub(crate) fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("draining")]);
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(target: "aop::origin", error = %e, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}
