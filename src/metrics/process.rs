//! The `process_*` series every exporter has, read from `/proc`.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// This process's CPU, memory, file descriptors and start time, read from
/// /proc at each scrape under the names every exporter uses (`process_*`).
#[derive(Debug)]
pub(super) struct Process;

/// Linux reports CPU times in clock ticks of USER_HZ, 100 on every
/// architecture Debian ships.
const CLOCK_TICKS: f64 = 100.0;

impl Process {
    /// `(utime + stime in seconds, virtual bytes, start time in ticks since boot)`.
    fn stat() -> Option<(f64, f64, f64)> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after `(comm)`; comm may hold spaces and parentheses.
        let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3)?.parse::<f64>().ok();
        Some((
            (field(14)? + field(15)?) / CLOCK_TICKS,
            field(23)?,
            field(22)?,
        ))
    }

    fn resident_bytes() -> Option<f64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let kib: f64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024.0)
    }

    fn boot_time() -> Option<f64> {
        std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|line| line.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()
    }

    fn max_fds() -> Option<f64> {
        std::fs::read_to_string("/proc/self/limits")
            .ok()?
            .lines()
            .find_map(|line| line.strip_prefix("Max open files"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    fn open_fds() -> Option<f64> {
        Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as f64)
    }
}

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stat = Process::stat();
        if let Some((cpu, _, _)) = stat {
            let counter = ConstCounter::new(cpu);
            counter.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                counter.metric_type(),
            )?)?;
        }
        let start = stat
            .zip(Process::boot_time())
            .map(|((_, _, ticks), boot)| boot + ticks / CLOCK_TICKS);
        for (name, help, value) in [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                Process::resident_bytes(),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                stat.map(|(_, bytes, _)| bytes),
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                start,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                Process::open_fds(),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                Process::max_fds(),
            ),
        ] {
            if let Some(value) = value {
                let gauge = ConstGauge::new(value);
                gauge.encode(encoder.encode_descriptor(
                    name,
                    help,
                    None,
                    gauge.metric_type(),
                )?)?;
            }
        }
        Ok(())
    }
}
