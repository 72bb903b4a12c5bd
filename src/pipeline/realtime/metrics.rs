//! `GET /metrics`: what `berth serve` counts, in Prometheus' text format
//! (the `prometheus-client` crate): ships by site and result, deliveries by
//! endpoint and result, the queue's depth, the time from a delivery's arrival
//! to berth's verified rollout, and how long a poll round takes.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A ship's labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShipLabels {
    pub result: String,
}

/// A delivery's labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub endpoint: String,
    pub result: String,
}

/// Every metric, and the registry that writes them.
pub struct Metrics {
    registry: Registry,
    pub ships: Family<ShipLabels, Counter>,
    pub deliveries: Family<DeliveryLabels, Counter>,
    pub queue_depth: Gauge,
    pub push_to_served: Histogram,
    pub poll_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("berth");
        let ships = Family::<ShipLabels, Counter>::default();
        registry.register("ships", "Runs of a site, by result", ships.clone());
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "deliveries",
            "Webhook deliveries, by endpoint and result",
            deliveries.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Runs pending, over every site",
            queue_depth.clone(),
        );
        let push_to_served = Histogram::new([
            1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
        ]);
        registry.register(
            "push_to_served_seconds",
            "From a delivery's arrival to berth's verified rollout",
            push_to_served.clone(),
        );
        let poll_seconds = Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0]);
        registry.register(
            "poll_seconds",
            "How long one poll round took",
            poll_seconds.clone(),
        );
        Self {
            registry,
            ships,
            deliveries,
            queue_depth,
            push_to_served,
            poll_seconds,
        }
    }

    /// A run of a site ended with `result`.
    pub fn ship(&self, result: &str) {
        self.ships
            .get_or_create(&ShipLabels {
                result: result.to_string(),
            })
            .inc();
    }

    /// A delivery to `endpoint` was answered with `result`.
    pub fn delivery(&self, endpoint: &str, result: &str) {
        self.deliveries
            .get_or_create(&DeliveryLabels {
                endpoint: endpoint.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    /// The metrics in Prometheus' text format.
    pub fn text(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_written_with_its_labels() {
        let metrics = Metrics::new();
        metrics.ship("deployed");
        metrics.ship("deployed");
        metrics.delivery("github", "unauthorized");
        metrics.queue_depth.set(3);
        metrics.push_to_served.observe(4.2);
        let text = metrics.text();
        assert!(
            text.contains("berth_ships_total{result=\"deployed\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("berth_deliveries_total{endpoint=\"github\",result=\"unauthorized\"} 1"),
            "{text}"
        );
        assert!(text.contains("berth_queue_depth 3"), "{text}");
        assert!(text.contains("berth_push_to_served_seconds_count 1"), "{text}");
        assert!(text.contains("# EOF"), "{text}");
    }
}
