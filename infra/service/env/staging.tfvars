# What makes the service root the staging environment. Its state is
# .mlops/terraform/staging/terraform.tfstate, chosen at init.
environment = "staging"
port        = 5101 # serving.staging_port in mlops.yaml
