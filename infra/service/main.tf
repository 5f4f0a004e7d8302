# The model service of one environment: a local process started and stopped by Terraform.
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
  # A destroy-time provisioner can only read `self`, so it finds the pid file here.
  input = merge(local.service, local.files)

  # setsid puts the service in its own session and process group (pgid = pid), so it
  # outlives Terraform and whoever called it, and stopping it can signal the whole group.
  provisioner "local-exec" {
    interpreter = ["/bin/sh", "-c"]
    command     = <<-EOT
      set -e
      mkdir -p "$SERVICE_RUN_DIR"
      echo "--- $(date -u +%Y-%m-%dT%H:%M:%SZ) starting $SERVICE_MODEL_URI on $SERVICE_HOST:$SERVICE_PORT" >> "$SERVICE_LOG_FILE"
      setsid nohup ${var.serve_command} --model-uri "$SERVICE_MODEL_URI" --host "$SERVICE_HOST" --port "$SERVICE_PORT" --workers "$SERVICE_WORKERS"${var.shadow_model_uri == "" ? "" : " --shadow-model-uri \"$SERVICE_SHADOW_MODEL_URI\""} >> "$SERVICE_LOG_FILE" 2>&1 < /dev/null &
      echo $! > "$SERVICE_PID_FILE"
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

  # TERM the service's process group, wait (bounded) until no member is left, then KILL
  # what remains. A group is only found while a member runs, so a stale pid file whose pid
  # was recycled by an unrelated process is a no-op, as is a missing pid file.
  # (Written `kill -TERM "-$pid"`: dash's kill rejects both `--` and `-s TERM -pid`.)
  provisioner "local-exec" {
    when        = destroy
    interpreter = ["/bin/sh", "-c"]
    command     = <<-EOT
      pid=$(cat "$SERVICE_PID_FILE" 2>/dev/null) || pid=""
      case "$pid" in ''|*[!0-9]*) echo "no pid in $SERVICE_PID_FILE: nothing to stop"; exit 0 ;; esac
      running() {
        # Zombies do not count: they are stopped and wait for init to reap them.
        if command -v ps > /dev/null; then
          ps -eo pgid=,stat= | awk -v group="$pid" '$1 == group && $2 !~ /^Z/ { n++ } END { exit n == 0 }'
        else
          kill -0 "-$pid" 2>/dev/null
        fi
      }
      wait_gone() {
        i=0
        while running && [ "$i" -lt "$1" ]; do sleep 0.1; i=$((i + 1)); done
        ! running
      }
      kill -TERM "-$pid" 2>/dev/null || true
      wait_gone 100 || echo "service $pid ignored TERM for 10 s: sending KILL"
      kill -KILL "-$pid" 2>/dev/null || true
      wait_gone 50 || { echo "service $pid is still running"; exit 1; }
      rm -f "$SERVICE_PID_FILE"
    EOT
    environment = {
      SERVICE_PID_FILE = self.input.pid_file
    }
  }
}
