# The model service of one environment: a local process that Terraform starts and stops
# through mlops's process owner (python -m mlops.processes, var.process_command).
# What differs between environments is in env/<environment>.tfvars, passed with -var-file;
# each environment keeps its own state, whose local-backend path is chosen at init
# (-backend-config=path=...), so no state is written inside the repository.
# The built-in terraform_data resource needs no provider download; a cloud provider can
# replace it later without changing the variables or outputs.
terraform {
  # terraform_data needs 1.4; `terraform test` with expect_failures needs 1.6.
  required_version = ">= 1.6"

  backend "local" {}
}

# The service used to live in a module; a state applied then keeps its process (and its
# stop provisioner) instead of orphaning it.
moved {
  from = module.model_service.terraform_data.service
  to   = terraform_data.service
}

locals {
  # Everything the running process depends on: changing any of it replaces the service.
  service = {
    environment   = var.environment
    model_name    = var.model_name
    model_version = var.model_version
    model_uri     = var.model_uri
    shadow_uri    = var.shadow_model_uri
    host          = var.host
    port          = var.port
    workers       = var.workers
    serve_command = var.serve_command
    tracking_uri  = var.tracking_uri
    run_dir       = var.run_dir
  }
  files = {
    endpoint = "http://${var.host}:${var.port}"
    pid_file = "${var.run_dir}/model-service-${var.environment}.pid"
    log_file = "${var.run_dir}/model-service-${var.environment}.log"
  }
}

resource "terraform_data" "service" {
  triggers_replace = local.service
  # A destroy-time provisioner can only read `self`, so it finds the pid file and the process
  # owner here. The owner is not in triggers_replace: the running service does not depend on it.
  input = merge(local.service, local.files, { process_command = var.process_command })

  # mlops's process owner (mlops/processes) starts the service in its own session and
  # process group, so it outlives Terraform and whoever called it, and stopping it can signal the
  # whole group; it appends the output to the log and writes the pid file (pid + start time).
  # The shell only splits serve_command into words.
  provisioner "local-exec" {
    interpreter = ["/bin/sh", "-c"]
    command     = <<-EOT
      ${var.process_command} start --pid-file "$SERVICE_PID_FILE" --log-file "$SERVICE_LOG_FILE" --cwd "$SERVICE_RUN_DIR" -- \
        ${var.serve_command} --model-uri "$SERVICE_MODEL_URI" --host "$SERVICE_HOST" --port "$SERVICE_PORT" --workers "$SERVICE_WORKERS"${var.shadow_model_uri == "" ? "" : " --shadow-model-uri \"$SERVICE_SHADOW_MODEL_URI\""}
    EOT
    environment = {
      SERVICE_RUN_DIR          = var.run_dir
      SERVICE_LOG_FILE         = local.files.log_file
      SERVICE_PID_FILE         = local.files.pid_file
      SERVICE_MODEL_URI        = var.model_uri
      SERVICE_SHADOW_MODEL_URI = var.shadow_model_uri
      SERVICE_HOST             = var.host
      SERVICE_PORT             = var.port
      SERVICE_WORKERS          = var.workers
      MLFLOW_TRACKING_URI      = var.tracking_uri
    }
  }

  # The same owner stops it: TERM to its process group and descendants, a bounded wait, KILL to
  # what remains, pid file removed. A missing pid file, or one whose process is gone (its pid
  # perhaps recycled), stops nothing. A state applied before the owner did this has a bare pid
  # file and no process_command in its input: the owner reads that pid when it surely is the
  # service's, and the command is the variable's default (a destroy provisioner cannot read var).
  provisioner "local-exec" {
    when        = destroy
    interpreter = ["/bin/sh", "-c"]
    command     = "${try(self.input.process_command, "python3 -m mlops.processes")} stop --pid-file \"$SERVICE_PID_FILE\""
    environment = {
      SERVICE_PID_FILE = self.input.pid_file
    }
  }
}
