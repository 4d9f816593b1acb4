"""VPC with one NAT gateway and a free S3 gateway endpoint."""

from __future__ import annotations

from aws_cdk import aws_ec2 as ec2
from constructs import Construct


class Network(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, availability_zones: tuple[str, ...]
    ) -> None:
        super().__init__(scope, construct_id)
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            availability_zones=list(availability_zones),
            # One NAT gateway: losing outbound traffic in one AZ only delays runs, while a second
            # gateway doubles the largest idle cost of the stack.
            nat_gateways=1,
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24
                ),
                ec2.SubnetConfiguration(
                    name="private", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=20
                ),
            ],
        )
        # Video bytes go to S3 through the gateway endpoint instead of paying NAT data charges.
        self.vpc.add_gateway_endpoint("S3", service=ec2.GatewayVpcEndpointAwsService.S3)
        self.private_subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
        self.private_subnet_ids = self.vpc.select_subnets(
            subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS
        ).subnet_ids
        # Every Dagster task (services, run workers, CPU and GPU steps) shares one group: the ECS
        # launcher and executor copy the launching task's groups onto the tasks they start.
        self.tasks_sg = ec2.SecurityGroup(
            self,
            "TasksSecurityGroup",
            vpc=self.vpc,
            description="Dagster services and run/step tasks",
        )
