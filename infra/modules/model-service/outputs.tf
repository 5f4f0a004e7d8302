output "endpoint" {
  description = "Base URL of the service."
  value       = terraform_data.service.input.endpoint
}

output "environment" {
  description = "The environment this service belongs to."
  value       = terraform_data.service.input.environment
}

output "model_version" {
  description = "The registered model version being served."
  value       = terraform_data.service.input.model_version
}

output "model_uri" {
  description = "The MLflow model URI being served."
  value       = terraform_data.service.input.model_uri
}

output "pid_file" {
  description = "File holding the service's process id (also its process group id)."
  value       = terraform_data.service.input.pid_file
}

output "log_file" {
  description = "File the service's stdout and stderr are appended to."
  value       = terraform_data.service.input.log_file
}
