terraform {
  # terraform_data needs 1.4; `terraform test` with expect_failures needs 1.6.
  required_version = ">= 1.6"
}
