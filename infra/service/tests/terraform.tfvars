# Settings for the apply run in apply.tftest.hcl. In `terraform test` this file wins over
# -var, so tests/integration/test_infra.py rewrites it in a private copy of infra/ (naming
# its own interpreter as process_command), and mlops/platform/ci/infra_check.py points
# run_dir at its own directory.
serve_command = "sh -c 'sleep 300' mlops-tftest-stand-in"
run_dir       = "/tmp/mlops-model-service-tftest"
