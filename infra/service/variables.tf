# Set per environment in env/<environment>.tfvars.

variable "environment" {
  description = "Which environment this is: staging or production. Its state must be the one chosen at init."
  type        = string

  validation {
    condition     = contains(["staging", "production"], var.environment)
    error_message = "The environment must be \"staging\" or \"production\"."
  }
}

variable "port" {
  description = "Port of the service (serving.<environment>_port in mlops.yaml, which mlops passes with -var)."
  type        = number

  validation {
    condition     = var.port >= 1024 && var.port <= 65535 && floor(var.port) == var.port
    error_message = "The port must be a whole number from 1024 to 65535."
  }
}

# Set per model version and machine, with -var.

variable "model_name" {
  description = "Registered model name in MLflow."
  type        = string
}

variable "model_version" {
  description = "Registered model version to serve."
  type        = string
}

variable "model_uri" {
  description = "MLflow model URI to serve, e.g. models:/flights-delay/3."
  type        = string
}

variable "shadow_model_uri" {
  description = "A second model version scored on every request off the answer's path (a shadow challenger), e.g. models:/flights-delay/4; empty: none."
  type        = string
  default     = ""
}

variable "serve_command" {
  description = "Shell command prefix that starts the service, e.g. \"/abs/path/.venv/bin/mlops serve\"; --model-uri, --host, --port and --workers are appended."
  type        = string
}

variable "process_command" {
  description = "Command prefix of mlops's process owner, which starts and stops the service: \"<python> -m mlops.processes\" (mlops passes its own interpreter); `start ...` and `stop ...` are appended. Its Python must import mlops."
  type        = string
  default     = "python3 -m mlops.processes"
}

variable "tracking_uri" {
  description = "MLflow tracking URI, given to the service as MLFLOW_TRACKING_URI."
  type        = string
}

variable "run_dir" {
  description = "Absolute directory for the service's pid file and log."
  type        = string

  validation {
    condition     = startswith(var.run_dir, "/")
    error_message = "The run_dir must be an absolute path."
  }
}

variable "workers" {
  description = "Number of service worker processes."
  type        = number
  default     = 1

  validation {
    condition     = var.workers >= 1 && floor(var.workers) == var.workers
    error_message = "The number of workers must be a whole number of at least 1."
  }
}

variable "host" {
  description = "Address the service listens on."
  type        = string
  default     = "127.0.0.1"
}
