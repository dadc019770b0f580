//! A Prometheus metric family built at scrape time from the live counters (what the
//! admin listener's collector returns).

use prometheus::proto::{self, MetricFamily, MetricType};

/// A family under construction.
pub(crate) struct Family(pub(crate) MetricFamily);

impl Family {
    pub(crate) fn new(name: &str, help: &str, kind: MetricType) -> Self {
        let mut f = MetricFamily::default();
        f.set_name(format!("pingora_dsl_{name}"));
        f.set_help(help.to_owned());
        f.set_field_type(kind);
        Family(f)
    }

    pub(crate) fn push(&mut self, labels: &[(&str, &str)], mut metric: proto::Metric) {
        metric.set_label(
            labels
                .iter()
                .map(|(k, v)| {
                    let mut pair = proto::LabelPair::default();
                    pair.set_name((*k).to_owned());
                    pair.set_value((*v).to_owned());
                    pair
                })
                .collect(),
        );
        self.0.mut_metric().push(metric);
    }

    pub(crate) fn counter(&mut self, labels: &[(&str, &str)], value: u64) {
        let mut c = proto::Counter::default();
        c.set_value(value as f64);
        let mut m = proto::Metric::default();
        m.set_counter(c);
        self.push(labels, m);
    }

    pub(crate) fn gauge(&mut self, labels: &[(&str, &str)], value: f64) {
        let mut g = proto::Gauge::default();
        g.set_value(value);
        self.push(labels, proto::Metric::from_gauge(g));
    }
}
