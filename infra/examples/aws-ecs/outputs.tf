# The same shape as infra/service's `service` output where it can be: CD reads `endpoint` and `model_version`.
output "service" {
  value = {
    endpoint      = "http://${aws_lb.service.dns_name}"
    environment   = var.environment
    model_uri     = "models:/${var.model_name}/${var.model_version}"
    model_version = var.model_version
  }
}
