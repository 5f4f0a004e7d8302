# What makes the service root the production environment. Its state is
# .mlops/terraform/production/terraform.tfstate, chosen at init.
environment = "production"
port        = 5102 # serving.production_port in mlops.yaml
