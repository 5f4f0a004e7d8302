# An example, not applied by this project: the model service as an AWS ECS Fargate service behind
# an application load balancer, with the same inputs as the local root (infra/service): which model
# version, from which MLflow. CD would apply it per environment with its own state and var file, as
# it applies infra/service. Checked here with `terraform fmt` only: `validate` needs the AWS provider,
# which this machine cannot download (docs/scaling.md).

terraform {
  required_version = ">= 1.6"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.0"
    }
  }
}

provider "aws" {
  region = var.region
}

locals {
  name = "${var.model_name}-${var.environment}"
  port = 8080
}

resource "aws_cloudwatch_log_group" "service" {
  name              = "/mlops/${local.name}"
  retention_in_days = 30
}

resource "aws_iam_role" "execution" {
  name = "${local.name}-execution"
  assume_role_policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Principal = { Service = "ecs-tasks.amazonaws.com" }, Action = "sts:AssumeRole" }]
  })
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

resource "aws_iam_role_policy" "read_credentials" {
  name = "${local.name}-mlflow-credentials"
  role = aws_iam_role.execution.id
  policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Action = ["secretsmanager:GetSecretValue"], Resource = [var.mlflow_credentials_secret_arn] }]
  })
}

resource "aws_ecs_task_definition" "service" {
  family                   = local.name
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.cpu
  memory                   = var.memory
  execution_role_arn       = aws_iam_role.execution.arn
  container_definitions = jsonencode([{
    name      = "model"
    image     = var.image
    essential = true
    command = ["mlops", "serve", "--model-uri", "models:/${var.model_name}/${var.model_version}",
    "--host", "0.0.0.0", "--port", tostring(local.port), "--workers", tostring(var.workers)]
    portMappings = [{ containerPort = local.port, protocol = "tcp" }]
    environment  = [{ name = "MLFLOW_TRACKING_URI", value = var.tracking_uri }]
    # The secret's JSON keys become the variables MLflow's client reads; never in the plan or the state.
    secrets = [
      { name = "MLFLOW_TRACKING_USERNAME", valueFrom = "${var.mlflow_credentials_secret_arn}:username::" },
      { name = "MLFLOW_TRACKING_PASSWORD", valueFrom = "${var.mlflow_credentials_secret_arn}:password::" },
    ]
    healthCheck = {
      command  = ["CMD-SHELL", "python -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:${local.port}/ping')\""]
      interval = 10
      retries  = 3
    }
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.service.name
        awslogs-region        = var.region
        awslogs-stream-prefix = "model"
      }
    }
  }])
}

resource "aws_lb" "service" {
  name               = substr(local.name, 0, 32)
  internal           = true # reachable inside the VPC only, as the local service is on 127.0.0.1
  load_balancer_type = "application"
  subnets            = var.subnet_ids
  security_groups    = var.security_group_ids
}

resource "aws_lb_target_group" "service" {
  name        = substr(local.name, 0, 32)
  port        = local.port
  protocol    = "HTTP"
  target_type = "ip"
  vpc_id      = var.vpc_id
  health_check {
    path    = "/ping"
    matcher = "200"
  }
}

resource "aws_lb_listener" "service" {
  load_balancer_arn = aws_lb.service.arn
  port              = 80
  protocol          = "HTTP"
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.service.arn
  }
}

resource "aws_ecs_cluster" "service" {
  name = local.name
}

resource "aws_ecs_service" "service" {
  name            = local.name
  cluster         = aws_ecs_cluster.service.id
  task_definition = aws_ecs_task_definition.service.arn
  desired_count   = var.desired_count
  launch_type     = "FARGATE"
  network_configuration {
    subnets         = var.subnet_ids
    security_groups = var.security_group_ids
  }
  load_balancer {
    target_group_arn = aws_lb_target_group.service.arn
    container_name   = "model"
    container_port   = local.port
  }
  deployment_circuit_breaker {
    enable   = true
    rollback = true # a version whose tasks never turn healthy goes back to the one before
  }
  depends_on = [aws_lb_listener.service]
}
