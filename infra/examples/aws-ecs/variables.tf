variable "environment" {
  type = string
  validation {
    condition     = contains(["staging", "production"], var.environment)
    error_message = "environment must be staging or production"
  }
}

variable "model_name" {
  type = string
}

variable "model_version" {
  type = string
}

variable "tracking_uri" {
  type        = string
  description = "The shared MLflow server the service loads the version from"
}

variable "mlflow_credentials_secret_arn" {
  type        = string
  description = "A Secrets Manager secret holding {\"username\": ..., \"password\": ...} for MLflow"
}

variable "image" {
  type        = string
  description = "An image with this repository installed (`mlops` on PATH)"
}

variable "region" {
  type    = string
  default = "eu-west-1"
}

variable "vpc_id" {
  type = string
}

variable "subnet_ids" {
  type = list(string)
}

variable "security_group_ids" {
  type = list(string)
}

variable "cpu" {
  type    = number
  default = 1024
}

variable "memory" {
  type    = number
  default = 2048
}

variable "workers" {
  type    = number
  default = 1
}

variable "desired_count" {
  type    = number
  default = 2
}
