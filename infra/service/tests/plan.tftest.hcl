# Plan-only tests of the service root: variable validation and what it plans. Nothing is
# started. The variables below stand in for env/<environment>.tfvars and mlops's -var.

variables {
  environment   = "staging"
  model_name    = "flights-delay"
  model_version = "3"
  model_uri     = "models:/flights-delay/3"
  port          = 5101
  serve_command = "/opt/mlops/.venv/bin/mlops serve"
  tracking_uri  = "http://127.0.0.1:5000"
  run_dir       = "/var/tmp/mlops-model-service-plan-test"
}

run "plans_the_service_and_its_outputs" {
  command = plan

  assert {
    condition     = output.service.endpoint == "http://127.0.0.1:5101"
    error_message = "The endpoint must be http://<host>:<port>."
  }

  assert {
    condition     = output.service.environment == "staging" && output.service.model_version == "3" && output.service.model_uri == "models:/flights-delay/3"
    error_message = "The outputs must describe the model being served."
  }

  assert {
    condition     = output.service.pid_file == "/var/tmp/mlops-model-service-plan-test/model-service-staging.pid"
    error_message = "The pid file must live in run_dir and be named after the environment."
  }

  assert {
    condition     = output.service.log_file == "/var/tmp/mlops-model-service-plan-test/model-service-staging.log"
    error_message = "The log file must live in run_dir and be named after the environment."
  }
}

run "replaces_the_service_when_what_it_runs_changes" {
  command = plan

  assert {
    condition = alltrue([
      terraform_data.service.triggers_replace.model_uri == var.model_uri,
      terraform_data.service.triggers_replace.model_version == var.model_version,
      terraform_data.service.triggers_replace.port == var.port,
      terraform_data.service.triggers_replace.workers == 1,
      terraform_data.service.triggers_replace.serve_command == var.serve_command,
      terraform_data.service.triggers_replace.tracking_uri == var.tracking_uri,
    ])
    error_message = "The model, port, workers, command and tracking URI must all trigger a replacement."
  }
}

run "gives_the_stop_provisioner_the_process_owner_without_replacing_on_it" {
  command = plan

  variables {
    process_command = "/opt/mlops/.venv/bin/python -m mlops.processes"
  }

  assert {
    condition     = terraform_data.service.input.process_command == var.process_command
    error_message = "The destroy provisioner reads the process owner's command from the input (it can read only self)."
  }

  assert {
    condition     = !contains(keys(terraform_data.service.triggers_replace), "process_command")
    error_message = "The running service does not depend on the process owner's command: changing it must not replace it."
  }
}

run "rejects_an_unknown_environment" {
  command = plan

  variables {
    environment = "dev"
  }

  expect_failures = [var.environment]
}

run "rejects_a_privileged_port" {
  command = plan

  variables {
    port = 80
  }

  expect_failures = [var.port]
}

run "rejects_a_port_out_of_range" {
  command = plan

  variables {
    port = 70000
  }

  expect_failures = [var.port]
}

run "rejects_zero_workers" {
  command = plan

  variables {
    workers = 0
  }

  expect_failures = [var.workers]
}

run "rejects_a_relative_run_dir" {
  command = plan

  variables {
    run_dir = ".mlops/run"
  }

  expect_failures = [var.run_dir]
}
