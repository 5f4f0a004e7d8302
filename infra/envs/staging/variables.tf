variable "model_name" {
  description = "Registered model name in MLflow."
  type        = string
}

variable "model_version" {
  description = "Registered model version to serve."
  type        = string
}

variable "model_uri" {
  description = "MLflow model URI to serve."
  type        = string
}

variable "serve_command" {
  description = "Command prefix that starts the service, e.g. \"/abs/path/.venv/bin/mlops serve\"."
  type        = string
}

variable "tracking_uri" {
  description = "MLflow tracking URI given to the service."
  type        = string
}

variable "run_dir" {
  description = "Absolute directory for the service's pid file and log."
  type        = string
}

variable "port" {
  description = "Port of the staging service on 127.0.0.1 (serving.staging_port in mlops.yaml)."
  type        = number
  default     = 5101
}

variable "workers" {
  description = "Number of service worker processes."
  type        = number
  default     = 1
}
