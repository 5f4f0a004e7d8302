# Starts a harmless stand-in service for real; `terraform test` then destroys it, which
# runs the stop provisioner. The stand-in (serve_command in terraform.tfvars) ignores the
# flags the root appends. Both provisioners run process_command: its default needs a python3
# on PATH that imports mlops (the project's venv first on PATH, as in the stack and its CI),
# unless terraform.tfvars names one. tests/integration/test_infra.py checks nothing is left
# running.

variables {
  environment   = "production"
  model_name    = "flights-delay"
  model_version = "7"
  model_uri     = "models:/flights-delay/7"
  port          = 18765
  tracking_uri  = "http://127.0.0.1:5000"
}

run "starts_the_service" {
  command = apply

  assert {
    condition     = output.service.endpoint == "http://127.0.0.1:18765"
    error_message = "The endpoint must be http://<host>:<port>."
  }

  assert {
    condition     = jsondecode(file(output.service.pid_file)).pid > 1 && jsondecode(file(output.service.pid_file)).create_time > 0
    error_message = "Starting the service must write its pid file: its pid and start time, as JSON."
  }

  assert {
    condition     = strcontains(file(output.service.log_file), "starting: ") && strcontains(file(output.service.log_file), "--model-uri models:/flights-delay/7 --host 127.0.0.1 --port 18765")
    error_message = "Starting the service must append a line naming its command to its log."
  }
}
