output "endpoint" {
  description = "Base URL of the service."
  value       = module.model_service.endpoint
}

output "environment" {
  description = "The environment this service belongs to."
  value       = module.model_service.environment
}

output "model_version" {
  description = "The registered model version being served."
  value       = module.model_service.model_version
}

output "model_uri" {
  description = "The MLflow model URI being served."
  value       = module.model_service.model_uri
}

output "pid_file" {
  description = "File holding the service's process id."
  value       = module.model_service.pid_file
}

output "log_file" {
  description = "File the service's output is appended to."
  value       = module.model_service.log_file
}
