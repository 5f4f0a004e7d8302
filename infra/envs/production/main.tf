# The production model service. The local backend's state path is chosen at init
# (-backend-config=path=...), so no state is written inside the repository.
terraform {
  required_version = ">= 1.6"

  backend "local" {}
}

module "model_service" {
  source = "../../modules/model-service"

  environment   = "production"
  model_name    = var.model_name
  model_version = var.model_version
  model_uri     = var.model_uri
  port          = var.port
  workers       = var.workers
  serve_command = var.serve_command
  tracking_uri  = var.tracking_uri
  run_dir       = var.run_dir
}
