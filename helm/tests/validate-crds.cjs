// Validates the chart's custom resources against their published models (KEDA, Prometheus
// Operator), which kubernetes-validate has no schemas for. Reads a JSON array of rendered objects
// on stdin; exits 1 naming the first invalid one. Usage: node validate-crds.cjs MODELS_DIR
const path = require("node:path");
const modelsDir = process.argv[2];
const load = (name) => require(path.join(modelsDir, "node_modules", name));
const keda = load("@kubernetes-models/keda/keda.sh/v1alpha1");
const monitoring = load("@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1");
const models = {
  "keda.sh/v1alpha1/ScaledObject": keda.ScaledObject,
  "keda.sh/v1alpha1/TriggerAuthentication": keda.TriggerAuthentication,
  "monitoring.coreos.com/v1/ServiceMonitor": monitoring.ServiceMonitor,
  "monitoring.coreos.com/v1/PrometheusRule": monitoring.PrometheusRule,
};
const objects = JSON.parse(require("node:fs").readFileSync(0, "utf8"));
let checked = 0;
for (const object of objects) {
  const Model = models[`${object.apiVersion}/${object.kind}`];
  if (!Model) continue;
  try {
    new Model(object).validate();
    checked += 1;
  } catch (error) {
    console.error(`${object.kind} ${object.metadata.name}: ${error.message}`);
    process.exit(1);
  }
}
console.log(`${checked} custom resources valid`);
