"""Scale-from-zero GPU instances registered with the ECS cluster as a capacity provider."""

from __future__ import annotations

from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from constructs import Construct

from stereospot_cdk.network import Network

# The CUDA image plus the GPU AMI's own layers do not fit the AMI's default 30 GiB root volume.
ROOT_VOLUME_GIB = 100


class GpuCapacity(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        network: Network,
        cluster: ecs.Cluster,
        instance_type: str,
        max_instances: int,
    ) -> None:
        super().__init__(scope, construct_id)
        security_group = ec2.SecurityGroup(
            self, "InstanceSecurityGroup", vpc=network.vpc, description="GPU container instances"
        )
        self.auto_scaling_group = autoscaling.AutoScalingGroup(
            self,
            "Instances",
            vpc=network.vpc,
            vpc_subnets=network.private_subnets,
            security_group=security_group,
            instance_type=ec2.InstanceType(instance_type),
            # Amazon Linux 2 reaches end of life on 2026-06-30 and its GPU image carries an older
            # driver than the CUDA 12.8 worker image expects.
            machine_image=ecs.EcsOptimizedImage.amazon_linux2023(ecs.AmiHardwareType.GPU),
            min_capacity=0,
            max_capacity=max_instances,
            require_imdsv2=True,
            block_devices=[
                autoscaling.BlockDevice(
                    device_name="/dev/xvda",
                    volume=autoscaling.BlockDeviceVolume.ebs(
                        ROOT_VOLUME_GIB,
                        encrypted=True,
                        volume_type=autoscaling.EbsDeviceVolumeType.GP3,
                    ),
                )
            ],
        )
        # A second step on a warm instance should reuse its cached multi-GB image.
        self.auto_scaling_group.add_user_data(
            "echo ECS_IMAGE_PULL_BEHAVIOR=prefer-cached >> /etc/ecs/ecs.config"
        )
        self.capacity_provider = ecs.AsgCapacityProvider(
            self,
            "CapacityProvider",
            auto_scaling_group=self.auto_scaling_group,
            # Managed scaling starts instances when GPU tasks wait in PROVISIONING and removes
            # them again when idle, so an idle stack pays for no GPU.
            enable_managed_scaling=True,
            target_capacity_percent=100,
            # Scale-in must never pick an instance with a GPU step on it (a step can run for
            # hours); ECS protects busy instances and lifts protection from idle ones.
            enable_managed_termination_protection=True,
            # ECS drains instances itself; without this CDK adds a Lambda-based drain hook.
            enable_managed_draining=True,
        )
        cluster.add_asg_capacity_provider(self.capacity_provider)
