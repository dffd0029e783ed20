# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_price_alertd_global_optspecs
    string join \n config= h/help V/version
end

function __fish_price_alertd_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_price_alertd_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_price_alertd_using_subcommand
    set -l cmd (__fish_price_alertd_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c price-alertd -n "__fish_price_alertd_needs_command" -l config -d 'The TOML configuration. Defaults to $PRICE_ALERTD_CONFIG, then /etc/price-alertd/price-alertd.toml, then the embedded copy of the shipped etc/price-alertd.toml (database in the working directory)' -r -F
complete -c price-alertd -n "__fish_price_alertd_needs_command" -s h -l help -d 'Print help'
complete -c price-alertd -n "__fish_price_alertd_needs_command" -s V -l version -d 'Print version'
complete -c price-alertd -n "__fish_price_alertd_needs_command" -f -a "run" -d 'Run the daemon: schedule the jobs, evaluate, deliver. SIGHUP reloads the configuration (a bad file is refused and the running jobs stay); SIGTERM/SIGINT stop scheduling, let running jobs finish, deliver pending events for up to webhook.drain_timeout, and exit 0'
complete -c price-alertd -n "__fish_price_alertd_needs_command" -f -a "check-config" -d 'Validate the configuration and list each job\'s next 3 fire times, in UTC and in the job\'s zone, computed as the scheduler computes them. Exits 0 if it is valid, 78 with every error (key and line:col) if not, and as `run` would (65, 66, 73, 74; 69 for the metrics or stream address) if the database or an address it listens on cannot be used'
complete -c price-alertd -n "__fish_price_alertd_needs_command" -f -a "run-job" -d 'Run one job now, deliver what is pending (for up to webhook.drain_timeout), print one line of key=value pairs (triggered= delivered= pending= ...) and exit non-zero if the job failed'
complete -c price-alertd -n "__fish_price_alertd_needs_command" -f -a "outbox" -d 'Inspect and replay the outbox of events'
complete -c price-alertd -n "__fish_price_alertd_needs_command" -f -a "alerts" -d 'Manage alerts'
complete -c price-alertd -n "__fish_price_alertd_needs_command" -f -a "quotes" -d 'Inspect and set quotes'
complete -c price-alertd -n "__fish_price_alertd_needs_command" -f -a "completions" -d 'Print the completion script for a shell, e.g. `price-alertd completions bash > ~/.local/share/bash-completion/completions/price-alertd` (the package installs bash\'s, zsh\'s and fish\'s)'
complete -c price-alertd -n "__fish_price_alertd_needs_command" -f -a "status" -d 'Per job: its last run, how long it took and its result; outbox pending and dead'
complete -c price-alertd -n "__fish_price_alertd_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand run" -l config -d 'The TOML configuration. Defaults to $PRICE_ALERTD_CONFIG, then /etc/price-alertd/price-alertd.toml, then the embedded copy of the shipped etc/price-alertd.toml (database in the working directory)' -r -F
complete -c price-alertd -n "__fish_price_alertd_using_subcommand run" -s h -l help -d 'Print help'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand check-config" -l from -d 'List fire times after this instant (RFC 3339) instead of now' -r
complete -c price-alertd -n "__fish_price_alertd_using_subcommand check-config" -l config -d 'The TOML configuration. Defaults to $PRICE_ALERTD_CONFIG, then /etc/price-alertd/price-alertd.toml, then the embedded copy of the shipped etc/price-alertd.toml (database in the working directory)' -r -F
complete -c price-alertd -n "__fish_price_alertd_using_subcommand check-config" -l reload -d 'Check only what a reload (SIGHUP) applies, as the unit\'s ExecReload does: not the database or the addresses it listens on, which the running daemon holds and which apply at the next restart'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand check-config" -s h -l help -d 'Print help'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand run-job" -l config -d 'The TOML configuration. Defaults to $PRICE_ALERTD_CONFIG, then /etc/price-alertd/price-alertd.toml, then the embedded copy of the shipped etc/price-alertd.toml (database in the working directory)' -r -F
complete -c price-alertd -n "__fish_price_alertd_using_subcommand run-job" -s h -l help -d 'Print help'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand outbox; and not __fish_seen_subcommand_from list show replay help" -l config -d 'The TOML configuration. Defaults to $PRICE_ALERTD_CONFIG, then /etc/price-alertd/price-alertd.toml, then the embedded copy of the shipped etc/price-alertd.toml (database in the working directory)' -r -F
complete -c price-alertd -n "__fish_price_alertd_using_subcommand outbox; and not __fish_seen_subcommand_from list show replay help" -s h -l help -d 'Print help'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand outbox; and not __fish_seen_subcommand_from list show replay help" -f -a "list" -d 'List events, oldest first: undelivered ones (pending and dead) unless --state says otherwise; says how many more past the limit'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand outbox; and not __fish_seen_subcommand_from list show replay help" -f -a "show" -d 'One event: its state, its body as queued, and every attempt (time, URL, status or error, duration)'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand outbox; and not __fish_seen_subcommand_from list show replay help" -f -a "replay" -d 'Put events back on a fresh retry schedule, due now, with the same ids: those named, every dead letter, or every event the filters match (dead ones unless --state says otherwise; delivered ones too with --state delivered or all). Says how many'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand outbox; and not __fish_seen_subcommand_from list show replay help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand outbox; and __fish_seen_subcommand_from list" -l state -d 'Only events in this state' -r -f -a "pending\t''
dead\t''
delivered\t''
undelivered\t''
all\t''"
complete -c price-alertd -n "__fish_price_alertd_using_subcommand outbox; and __fish_seen_subcommand_from list" -l user -d 'Only this user\'s events' -r
complete -c price-alertd -n "__fish_price_alertd_using_subcommand outbox; and __fish_seen_subcommand_from list" -l alert -d 'Only this alert\'s events' -r
complete -c price-alertd -n "__fish_price_alertd_using_subcommand outbox; and __fish_seen_subcommand_from list" -l since -d 'Only events queued at or after this instant (RFC 3339)' -r
complete -c price-alertd -n "__fish_price_alertd_using_subcommand outbox; and __fish_seen_subcommand_from list" -l until -d 'Only events queued before this instant (RFC 3339)' -r
complete -c price-alertd -n "__fish_price_alertd_using_subcommand outbox; and __fish_seen_subcommand_from list" -l limit -d 'At most this many rows' -r
complete -c price-alertd -n "__fish_price_alertd_using_subcommand outbox; and __fish_seen_subcommand_from list" -l config -d 'The TOML configuration. Defaults to $PRICE_ALERTD_CONFIG, then /etc/price-alertd/price-alertd.toml, then the embedded copy of the shipped etc/price-alertd.toml (database in the working directory)' -r -F
complete -c price-alertd -n "__fish_price_alertd_using_subcommand outbox; and __fish_seen_subcommand_from list" -l dead -d 'Only dead letters: events refused with a 4xx or whose retry schedule ran out (--state dead)'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand outbox; and __fish_seen_subcommand_from list" -l json -d 'One JSON object per line (the line saying how many more on stderr)'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand outbox; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand outbox; and __fish_seen_subcommand_from show" -l config -d 'The TOML configuration. Defaults to $PRICE_ALERTD_CONFIG, then /etc/price-alertd/price-alertd.toml, then the embedded copy of the shipped etc/price-alertd.toml (database in the working directory)' -r -F
complete -c price-alertd -n "__fish_price_alertd_using_subcommand outbox; and __fish_seen_subcommand_from show" -l json -d 'One JSON object'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand outbox; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand outbox; and __fish_seen_subcommand_from replay" -l state -d 'Only events in this state' -r -f -a "pending\t''
dead\t''
delivered\t''
undelivered\t''
all\t''"
complete -c price-alertd -n "__fish_price_alertd_using_subcommand outbox; and __fish_seen_subcommand_from replay" -l user -d 'Only this user\'s events' -r
complete -c price-alertd -n "__fish_price_alertd_using_subcommand outbox; and __fish_seen_subcommand_from replay" -l alert -d 'Only this alert\'s events' -r
complete -c price-alertd -n "__fish_price_alertd_using_subcommand outbox; and __fish_seen_subcommand_from replay" -l since -d 'Only events queued at or after this instant (RFC 3339)' -r
complete -c price-alertd -n "__fish_price_alertd_using_subcommand outbox; and __fish_seen_subcommand_from replay" -l until -d 'Only events queued before this instant (RFC 3339)' -r
complete -c price-alertd -n "__fish_price_alertd_using_subcommand outbox; and __fish_seen_subcommand_from replay" -l config -d 'The TOML configuration. Defaults to $PRICE_ALERTD_CONFIG, then /etc/price-alertd/price-alertd.toml, then the embedded copy of the shipped etc/price-alertd.toml (database in the working directory)' -r -F
complete -c price-alertd -n "__fish_price_alertd_using_subcommand outbox; and __fish_seen_subcommand_from replay" -l all-dead -d 'Every dead letter'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand outbox; and __fish_seen_subcommand_from replay" -l dry-run -d 'Only count what would be replayed'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand outbox; and __fish_seen_subcommand_from replay" -s h -l help -d 'Print help'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand outbox; and __fish_seen_subcommand_from help" -f -a "list" -d 'List events, oldest first: undelivered ones (pending and dead) unless --state says otherwise; says how many more past the limit'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand outbox; and __fish_seen_subcommand_from help" -f -a "show" -d 'One event: its state, its body as queued, and every attempt (time, URL, status or error, duration)'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand outbox; and __fish_seen_subcommand_from help" -f -a "replay" -d 'Put events back on a fresh retry schedule, due now, with the same ids: those named, every dead letter, or every event the filters match (dead ones unless --state says otherwise; delivered ones too with --state delivered or all). Says how many'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand outbox; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and not __fish_seen_subcommand_from list explain add cooldown snooze rearm disable help" -l config -d 'The TOML configuration. Defaults to $PRICE_ALERTD_CONFIG, then /etc/price-alertd/price-alertd.toml, then the embedded copy of the shipped etc/price-alertd.toml (database in the working directory)' -r -F
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and not __fish_seen_subcommand_from list explain add cooldown snooze rearm disable help" -s h -l help -d 'Print help'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and not __fish_seen_subcommand_from list explain add cooldown snooze rearm disable help" -f -a "list" -d 'List alerts, newest first, each with its state as the daemon judges it now; says how many more there are past the limit'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and not __fish_seen_subcommand_from list explain add cooldown snooze rearm disable help" -f -a "explain" -d 'Why an alert will or will not fire: its state, its quote, its levels against that price, the jobs that cover its ticker and whether they judged its latest change, and its events'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and not __fish_seen_subcommand_from list explain add cooldown snooze rearm disable help" -f -a "add" -d 'Add an alert; prints its id'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and not __fish_seen_subcommand_from list explain add cooldown snooze rearm disable help" -f -a "cooldown" -d 'Make an alert repeat, re-armed this long after each trigger, or fire once again (--none)'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and not __fish_seen_subcommand_from list explain add cooldown snooze rearm disable help" -f -a "snooze" -d 'Keep an alert from firing for a while: it stays armed, and is judged at the price of then when the snooze ends; or end a snooze (--off)'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and not __fish_seen_subcommand_from list explain add cooldown snooze rearm disable help" -f -a "rearm" -d 'Arm a triggered, expired or disabled alert again, with its trigger budget whole again; its next trigger carries a new event id'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and not __fish_seen_subcommand_from list explain add cooldown snooze rearm disable help" -f -a "disable" -d 'Disable an armed alert, without an event, or stop a repeating one that waits out its cooldown from being re-armed'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and not __fish_seen_subcommand_from list explain add cooldown snooze rearm disable help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and __fish_seen_subcommand_from list" -l state -d 'Only alerts in this state' -r -f -a "armed\t''
snoozed\t''
malformed\t''
no-quote\t''
stale-quote\t''
bad-quote\t''
waiting\t''
cooling\t''
spent\t''
triggered\t''
expired\t''
disabled\t''"
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and __fish_seen_subcommand_from list" -l ticker -d 'Only this ticker\'s alerts' -r
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and __fish_seen_subcommand_from list" -l user -d 'Only this user\'s alerts' -r
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and __fish_seen_subcommand_from list" -l before -d 'Only alerts whose id is below ID: the next page, as the line after a full page names it' -r
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and __fish_seen_subcommand_from list" -l limit -d 'At most this many rows' -r
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and __fish_seen_subcommand_from list" -l config -d 'The TOML configuration. Defaults to $PRICE_ALERTD_CONFIG, then /etc/price-alertd/price-alertd.toml, then the embedded copy of the shipped etc/price-alertd.toml (database in the working directory)' -r -F
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and __fish_seen_subcommand_from list" -l enabled -d 'Only enabled alerts (judged by the ticks)'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and __fish_seen_subcommand_from list" -l triggered -d 'Only alerts disabled by a trigger'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and __fish_seen_subcommand_from list" -l json -d 'One JSON object per line (the line saying how many more on stderr)'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and __fish_seen_subcommand_from explain" -l config -d 'The TOML configuration. Defaults to $PRICE_ALERTD_CONFIG, then /etc/price-alertd/price-alertd.toml, then the embedded copy of the shipped etc/price-alertd.toml (database in the working directory)' -r -F
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and __fish_seen_subcommand_from explain" -l json -d 'One JSON object'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and __fish_seen_subcommand_from explain" -s h -l help -d 'Print help'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and __fish_seen_subcommand_from add" -l reference -d 'The basis of moving_*_pct' -r
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and __fish_seen_subcommand_from add" -l upper -d 'A channel\'s upper level (inside, outside, entering, exiting)' -r
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and __fish_seen_subcommand_from add" -l note -r
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and __fish_seen_subcommand_from add" -l user -r
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and __fish_seen_subcommand_from add" -l expires -d 'When the alert stops being evaluated (RFC 3339)' -r
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and __fish_seen_subcommand_from add" -l cooldown -d 'Make it repeat: re-armed this long after each trigger ("15m")' -r
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and __fish_seen_subcommand_from add" -l rearm-band -d 'With --cooldown: re-arm only once the price came back past the level by this percent too ("1" for 1%: `above 200` re-arms at 198 or below)' -r
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and __fish_seen_subcommand_from add" -l max-triggers -d 'With --cooldown: trigger at most N times, then stay disabled' -r
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and __fish_seen_subcommand_from add" -l config -d 'The TOML configuration. Defaults to $PRICE_ALERTD_CONFIG, then /etc/price-alertd/price-alertd.toml, then the embedded copy of the shipped etc/price-alertd.toml (database in the working directory)' -r -F
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and __fish_seen_subcommand_from cooldown" -l config -d 'The TOML configuration. Defaults to $PRICE_ALERTD_CONFIG, then /etc/price-alertd/price-alertd.toml, then the embedded copy of the shipped etc/price-alertd.toml (database in the working directory)' -r -F
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and __fish_seen_subcommand_from cooldown" -l none -d 'No cooldown: the alert fires once, and is re-armed only by hand'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and __fish_seen_subcommand_from cooldown" -s h -l help -d 'Print help'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and __fish_seen_subcommand_from snooze" -l config -d 'The TOML configuration. Defaults to $PRICE_ALERTD_CONFIG, then /etc/price-alertd/price-alertd.toml, then the embedded copy of the shipped etc/price-alertd.toml (database in the working directory)' -r -F
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and __fish_seen_subcommand_from snooze" -l off -d 'End the snooze now'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and __fish_seen_subcommand_from snooze" -s h -l help -d 'Print help'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and __fish_seen_subcommand_from rearm" -l config -d 'The TOML configuration. Defaults to $PRICE_ALERTD_CONFIG, then /etc/price-alertd/price-alertd.toml, then the embedded copy of the shipped etc/price-alertd.toml (database in the working directory)' -r -F
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and __fish_seen_subcommand_from rearm" -s h -l help -d 'Print help'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and __fish_seen_subcommand_from disable" -l config -d 'The TOML configuration. Defaults to $PRICE_ALERTD_CONFIG, then /etc/price-alertd/price-alertd.toml, then the embedded copy of the shipped etc/price-alertd.toml (database in the working directory)' -r -F
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and __fish_seen_subcommand_from disable" -s h -l help -d 'Print help'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and __fish_seen_subcommand_from help" -f -a "list" -d 'List alerts, newest first, each with its state as the daemon judges it now; says how many more there are past the limit'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and __fish_seen_subcommand_from help" -f -a "explain" -d 'Why an alert will or will not fire: its state, its quote, its levels against that price, the jobs that cover its ticker and whether they judged its latest change, and its events'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and __fish_seen_subcommand_from help" -f -a "add" -d 'Add an alert; prints its id'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and __fish_seen_subcommand_from help" -f -a "cooldown" -d 'Make an alert repeat, re-armed this long after each trigger, or fire once again (--none)'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and __fish_seen_subcommand_from help" -f -a "snooze" -d 'Keep an alert from firing for a while: it stays armed, and is judged at the price of then when the snooze ends; or end a snooze (--off)'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and __fish_seen_subcommand_from help" -f -a "rearm" -d 'Arm a triggered, expired or disabled alert again, with its trigger budget whole again; its next trigger carries a new event id'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and __fish_seen_subcommand_from help" -f -a "disable" -d 'Disable an armed alert, without an event, or stop a repeating one that waits out its cooldown from being re-armed'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand alerts; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand quotes; and not __fish_seen_subcommand_from set list help" -l config -d 'The TOML configuration. Defaults to $PRICE_ALERTD_CONFIG, then /etc/price-alertd/price-alertd.toml, then the embedded copy of the shipped etc/price-alertd.toml (database in the working directory)' -r -F
complete -c price-alertd -n "__fish_price_alertd_using_subcommand quotes; and not __fish_seen_subcommand_from set list help" -s h -l help -d 'Print help'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand quotes; and not __fish_seen_subcommand_from set list help" -f -a "set" -d 'Set a ticker\'s quote, stamped now'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand quotes; and not __fish_seen_subcommand_from set list help" -f -a "list" -d 'List every quote'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand quotes; and not __fish_seen_subcommand_from set list help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand quotes; and __fish_seen_subcommand_from set" -l config -d 'The TOML configuration. Defaults to $PRICE_ALERTD_CONFIG, then /etc/price-alertd/price-alertd.toml, then the embedded copy of the shipped etc/price-alertd.toml (database in the working directory)' -r -F
complete -c price-alertd -n "__fish_price_alertd_using_subcommand quotes; and __fish_seen_subcommand_from set" -s h -l help -d 'Print help'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand quotes; and __fish_seen_subcommand_from list" -l config -d 'The TOML configuration. Defaults to $PRICE_ALERTD_CONFIG, then /etc/price-alertd/price-alertd.toml, then the embedded copy of the shipped etc/price-alertd.toml (database in the working directory)' -r -F
complete -c price-alertd -n "__fish_price_alertd_using_subcommand quotes; and __fish_seen_subcommand_from list" -l json -d 'One JSON object per line'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand quotes; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand quotes; and __fish_seen_subcommand_from help" -f -a "set" -d 'Set a ticker\'s quote, stamped now'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand quotes; and __fish_seen_subcommand_from help" -f -a "list" -d 'List every quote'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand quotes; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand completions" -l config -d 'The TOML configuration. Defaults to $PRICE_ALERTD_CONFIG, then /etc/price-alertd/price-alertd.toml, then the embedded copy of the shipped etc/price-alertd.toml (database in the working directory)' -r -F
complete -c price-alertd -n "__fish_price_alertd_using_subcommand completions" -s h -l help -d 'Print help'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand status" -l config -d 'The TOML configuration. Defaults to $PRICE_ALERTD_CONFIG, then /etc/price-alertd/price-alertd.toml, then the embedded copy of the shipped etc/price-alertd.toml (database in the working directory)' -r -F
complete -c price-alertd -n "__fish_price_alertd_using_subcommand status" -l json -d 'One JSON object'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand status" -s h -l help -d 'Print help'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand help; and not __fish_seen_subcommand_from run check-config run-job outbox alerts quotes completions status help" -f -a "run" -d 'Run the daemon: schedule the jobs, evaluate, deliver. SIGHUP reloads the configuration (a bad file is refused and the running jobs stay); SIGTERM/SIGINT stop scheduling, let running jobs finish, deliver pending events for up to webhook.drain_timeout, and exit 0'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand help; and not __fish_seen_subcommand_from run check-config run-job outbox alerts quotes completions status help" -f -a "check-config" -d 'Validate the configuration and list each job\'s next 3 fire times, in UTC and in the job\'s zone, computed as the scheduler computes them. Exits 0 if it is valid, 78 with every error (key and line:col) if not, and as `run` would (65, 66, 73, 74; 69 for the metrics or stream address) if the database or an address it listens on cannot be used'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand help; and not __fish_seen_subcommand_from run check-config run-job outbox alerts quotes completions status help" -f -a "run-job" -d 'Run one job now, deliver what is pending (for up to webhook.drain_timeout), print one line of key=value pairs (triggered= delivered= pending= ...) and exit non-zero if the job failed'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand help; and not __fish_seen_subcommand_from run check-config run-job outbox alerts quotes completions status help" -f -a "outbox" -d 'Inspect and replay the outbox of events'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand help; and not __fish_seen_subcommand_from run check-config run-job outbox alerts quotes completions status help" -f -a "alerts" -d 'Manage alerts'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand help; and not __fish_seen_subcommand_from run check-config run-job outbox alerts quotes completions status help" -f -a "quotes" -d 'Inspect and set quotes'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand help; and not __fish_seen_subcommand_from run check-config run-job outbox alerts quotes completions status help" -f -a "completions" -d 'Print the completion script for a shell, e.g. `price-alertd completions bash > ~/.local/share/bash-completion/completions/price-alertd` (the package installs bash\'s, zsh\'s and fish\'s)'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand help; and not __fish_seen_subcommand_from run check-config run-job outbox alerts quotes completions status help" -f -a "status" -d 'Per job: its last run, how long it took and its result; outbox pending and dead'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand help; and not __fish_seen_subcommand_from run check-config run-job outbox alerts quotes completions status help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand help; and __fish_seen_subcommand_from outbox" -f -a "list" -d 'List events, oldest first: undelivered ones (pending and dead) unless --state says otherwise; says how many more past the limit'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand help; and __fish_seen_subcommand_from outbox" -f -a "show" -d 'One event: its state, its body as queued, and every attempt (time, URL, status or error, duration)'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand help; and __fish_seen_subcommand_from outbox" -f -a "replay" -d 'Put events back on a fresh retry schedule, due now, with the same ids: those named, every dead letter, or every event the filters match (dead ones unless --state says otherwise; delivered ones too with --state delivered or all). Says how many'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand help; and __fish_seen_subcommand_from alerts" -f -a "list" -d 'List alerts, newest first, each with its state as the daemon judges it now; says how many more there are past the limit'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand help; and __fish_seen_subcommand_from alerts" -f -a "explain" -d 'Why an alert will or will not fire: its state, its quote, its levels against that price, the jobs that cover its ticker and whether they judged its latest change, and its events'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand help; and __fish_seen_subcommand_from alerts" -f -a "add" -d 'Add an alert; prints its id'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand help; and __fish_seen_subcommand_from alerts" -f -a "cooldown" -d 'Make an alert repeat, re-armed this long after each trigger, or fire once again (--none)'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand help; and __fish_seen_subcommand_from alerts" -f -a "snooze" -d 'Keep an alert from firing for a while: it stays armed, and is judged at the price of then when the snooze ends; or end a snooze (--off)'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand help; and __fish_seen_subcommand_from alerts" -f -a "rearm" -d 'Arm a triggered, expired or disabled alert again, with its trigger budget whole again; its next trigger carries a new event id'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand help; and __fish_seen_subcommand_from alerts" -f -a "disable" -d 'Disable an armed alert, without an event, or stop a repeating one that waits out its cooldown from being re-armed'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand help; and __fish_seen_subcommand_from quotes" -f -a "set" -d 'Set a ticker\'s quote, stamped now'
complete -c price-alertd -n "__fish_price_alertd_using_subcommand help; and __fish_seen_subcommand_from quotes" -f -a "list" -d 'List every quote'
