# What `terraform output -json` gives mlops, read by environments.service_outputs() alone.

output "service" {
  description = <<-EOT
    What runs and where: endpoint (its base URL), environment, model_version and model_uri (what
    it serves), pid_file (its process id, also its process group id) and log_file (where its
    stdout and stderr are appended).
  EOT
  value = {
    for name in ["endpoint", "environment", "model_version", "model_uri", "pid_file", "log_file"] :
    name => terraform_data.service.input[name]
  }
}
